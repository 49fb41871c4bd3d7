//! What each subcommand of `raft-kv` (except `demo`) does.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::{CasArgs, CertsArgs, Command, MembersAction, MembersArgs};
use crate::client::{Client, parse_consistency};
use crate::config::{ServeConfig, ServeSettings};
use crate::http::{MembersRequest, TransferRequest};
use crate::server::Server;

/// Runs a subcommand other than `demo`; returns the process's exit status.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(settings) => serve(*settings).await.map(|()| ExitCode::SUCCESS),
        Command::Put {
            servers,
            key,
            value,
        } => {
            let index = Client::from_list(&servers.servers)?
                .put(&key, value)
                .await?;
            println!("OK (index {index})");
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            servers,
            key,
            consistency,
        } => {
            let Some(consistency) = parse_consistency(&consistency) else {
                bail!("unknown consistency `{consistency}`; expected linearizable, lease or stale");
            };
            match Client::from_list(&servers.servers)?
                .get(&key, consistency)
                .await?
            {
                Some(value) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&value)?;
                    out.write_all(b"\n")?;
                    out.flush()?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("{key}: not found");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Delete { servers, key } => {
            let deleted = Client::from_list(&servers.servers)?.delete(&key).await?;
            println!("{}", if deleted { "deleted" } else { "not found" });
            Ok(ExitCode::SUCCESS)
        }
        Command::Cas(args) => cas(args).await,
        Command::Status { servers } => status(&Client::from_list(&servers.servers)?).await,
        Command::Members(args) => members(args).await,
        Command::TransferLeader {
            servers,
            partition,
            to,
        } => {
            let request = TransferRequest { partition, to };
            let answer = Client::from_list(&servers.servers)?
                .transfer_leader(&request)
                .await?;
            for p in answer["partitions"].as_array().into_iter().flatten() {
                println!(
                    "partition {}: leadership handed to node {}",
                    p["partition"], p["to"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(args) => certs(args).map(|()| ExitCode::SUCCESS),
        Command::Demo(_) => bail!("`demo` is run by main"),
    }
}

/// `raft-kv serve`: runs until SIGTERM or Ctrl-C, then shuts down
/// gracefully.
pub async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let config = ServeConfig::load(settings)?;
    let id = config.id;
    let server = Server::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "raft-kv node {} ready http={} raft={}",
            id.0,
            server.http_addr(),
            server.raft_addr()
        )?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn cas(args: CasArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_list(&args.servers.servers)?;
    let expected = if args.absent {
        None
    } else {
        args.expected.as_deref()
    };
    let value = if args.delete {
        None
    } else {
        args.value.as_deref()
    };
    let outcome = client.cas(&args.key, expected, value).await?;
    println!(
        "{}",
        serde_json::json!({ "swapped": outcome.swapped, "current": outcome.current })
    );
    Ok(if outcome.swapped {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ids(value: &Value) -> String {
    let list: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.to_string())
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn status(client: &Client) -> anyhow::Result<ExitCode> {
    println!(
        "{:<22} {:>4} {:>9} {:<12} {:>6} {:>6} {:>9} {:>9} {:<10} learners",
        "server", "node", "partition", "role", "leader", "term", "commit", "applied", "voters"
    );
    let mut reachable = 0;
    for (server, answer) in client.status().await {
        match answer {
            Ok(view) => {
                reachable += 1;
                for p in view["partitions"].as_array().into_iter().flatten() {
                    println!(
                        "{:<22} {:>4} {:>9} {:<12} {:>6} {:>6} {:>9} {:>9} {:<10} {}",
                        server,
                        text(&view["node"]),
                        text(&p["partition"]),
                        text(&p["role"]),
                        text(&p["leader"]),
                        text(&p["term"]),
                        text(&p["commit"]),
                        text(&p["applied"]),
                        ids(&p["voters"]),
                        ids(&p["learners"]),
                    );
                }
            }
            Err(e) => println!("{server:<22} unreachable: {e}"),
        }
    }
    Ok(if reachable > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn members(args: MembersArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_list(&args.servers.servers)?;
    let request = match args.action {
        None => {
            let view = client.cluster().await?;
            for p in view["partitions"].as_array().into_iter().flatten() {
                println!(
                    "partition {}: leader {} voters {} learners {}",
                    text(&p["partition"]),
                    text(&p["leader"]),
                    ids(&p["voters"]),
                    ids(&p["learners"])
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(MembersAction::AddLearner {
            id,
            address,
            http_address,
            partition,
        }) => MembersRequest {
            partition,
            action: "add_learner".into(),
            id,
            address: Some(address),
            http_address,
        },
        Some(MembersAction::Promote { id, partition }) => MembersRequest {
            partition,
            action: "promote".into(),
            id,
            address: None,
            http_address: None,
        },
        Some(MembersAction::Remove { id, partition }) => MembersRequest {
            partition,
            action: "remove".into(),
            id,
            address: None,
            http_address: None,
        },
    };
    let answer = client.members(&request).await?;
    println!(
        "{} node {}: done in partitions {}",
        request.action,
        request.id,
        ids(&answer["partitions"])
    );
    Ok(ExitCode::SUCCESS)
}

fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let files = crate::certs::generate(&args.out, &args.nodes, &args.hosts)?;
    println!(
        "CA:      {} (key {})",
        files.ca.display(),
        files.ca_key.display()
    );
    for (id, tls) in &files.nodes {
        println!(
            "node {id}: {} (key {})",
            tls.cert.display(),
            tls.key.display()
        );
    }
    Ok(())
}
