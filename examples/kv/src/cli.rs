//! The command line of `raft-kv` (clap definitions).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ServeSettings;

/// The default `--servers` of the client commands.
pub const DEFAULT_SERVERS: &str = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003";

/// A replicated key-value store on Raft: a server, its client and a demo.
#[derive(Debug, Parser)]
#[command(name = "raft-kv", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node (configured by flags and/or a TOML file).
    Serve(Box<ServeSettings>),
    /// Set a key.
    Put {
        /// The servers.
        #[command(flatten)]
        servers: Servers,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print a key's value (exit status 1 when it is absent).
    Get {
        /// The servers.
        #[command(flatten)]
        servers: Servers,
        /// The key.
        key: String,
        /// linearizable, lease or stale.
        #[arg(long, default_value = "linearizable")]
        consistency: String,
    },
    /// Remove a key.
    Delete {
        /// The servers.
        #[command(flatten)]
        servers: Servers,
        /// The key.
        key: String,
    },
    /// Compare-and-set a key (exit status 1 when the comparison fails).
    Cas(CasArgs),
    /// Show every server's view of the cluster.
    Status {
        /// The servers.
        #[command(flatten)]
        servers: Servers,
    },
    /// Show or change the members of the partitions.
    Members(MembersArgs),
    /// Hand leadership of a partition (or of all) to another voter.
    TransferLeader {
        /// The servers.
        #[command(flatten)]
        servers: Servers,
        /// The partition (default: every partition).
        #[arg(long)]
        partition: Option<u64>,
        /// The new leader (default: the most caught-up voter).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Generate a development CA and per-node certificates for mutual TLS.
    Certs(CertsArgs),
    /// Start a local cluster of `raft-kv serve` processes and show it
    /// surviving the loss of its leader.
    Demo(crate::demo::DemoArgs),
}

/// Where the client commands send their requests.
#[derive(Clone, Debug, Args)]
pub struct Servers {
    /// HTTP addresses of the servers, host:port,...
    #[arg(long, env = "RAFT_KV_SERVERS", default_value = DEFAULT_SERVERS)]
    pub servers: String,
}

/// `raft-kv cas`.
#[derive(Clone, Debug, Args)]
pub struct CasArgs {
    /// The servers.
    #[command(flatten)]
    pub servers: Servers,
    /// The key.
    pub key: String,
    /// The value the key must have.
    #[arg(long, required_unless_present = "absent", conflicts_with = "absent")]
    pub expected: Option<String>,
    /// The key must be absent.
    #[arg(long)]
    pub absent: bool,
    /// The value to set.
    #[arg(long, required_unless_present = "delete", conflicts_with = "delete")]
    pub value: Option<String>,
    /// Delete the key when the comparison holds.
    #[arg(long)]
    pub delete: bool,
}

/// `raft-kv members`.
#[derive(Clone, Debug, Args)]
pub struct MembersArgs {
    /// The servers.
    #[command(flatten)]
    pub servers: Servers,
    /// The change to make; none to list the members.
    #[command(subcommand)]
    pub action: Option<MembersAction>,
}

/// A membership change.
#[derive(Clone, Debug, Subcommand)]
pub enum MembersAction {
    /// Add a node that receives the log but does not vote yet.
    AddLearner {
        /// The node's id.
        id: u64,
        /// Its Raft address, host:port.
        address: String,
        /// Its HTTP address, host:port (for leader hints).
        #[arg(long)]
        http_address: Option<String>,
        /// The partition (default: every partition).
        #[arg(long)]
        partition: Option<u64>,
    },
    /// Make a caught-up learner a voter.
    Promote {
        /// The node's id.
        id: u64,
        /// The partition (default: every partition).
        #[arg(long)]
        partition: Option<u64>,
    },
    /// Remove a voter or learner.
    Remove {
        /// The node's id.
        id: u64,
        /// The partition (default: every partition).
        #[arg(long)]
        partition: Option<u64>,
    },
}

/// `raft-kv certs`.
#[derive(Clone, Debug, Args)]
pub struct CertsArgs {
    /// Directory to write the files to.
    #[arg(long)]
    pub out: PathBuf,
    /// Node ids, 1,2,3.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
    /// Extra host names or IP addresses for every node's certificate.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_and_cas_choices() {
        let cli = Cli::try_parse_from([
            "raft-kv",
            "serve",
            "--id",
            "2",
            "--peers",
            "1@a:1,2@b:2",
            "--storage",
            "mem",
            "--heartbeat-ms",
            "20",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert_eq!((s.id, s.heartbeat_ms), (Some(2), Some(20)));
        assert!(Cli::try_parse_from(["raft-kv", "cas", "k", "--value", "v"]).is_err());
        assert!(
            Cli::try_parse_from([
                "raft-kv",
                "cas",
                "k",
                "--absent",
                "--expected",
                "x",
                "--value",
                "v"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["raft-kv", "cas", "k", "--absent", "--delete"]).is_ok());
        assert!(Cli::try_parse_from(["raft-kv", "serve", "--id", "x"]).is_err());
    }
}
