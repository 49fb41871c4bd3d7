//! Dialling: resolving a `host:port` address and making the QUIC and TLS
//! handshake, either with a known node (`node-<id>.raft`) or with whatever
//! node of the cluster answers at an address.

use std::net::SocketAddr;

use raft_api::NodeId;
use tokio::time::timeout;

use transport_util::ANY_NODE_SERVER_NAME;

use crate::context::Context;
use crate::tls::{node_server_name, peer_node};

/// Resolves `address` ("host:port"), preferring an address of the local
/// endpoint's family.
async fn resolve(context: &Context, address: &str) -> Result<SocketAddr, String> {
    let resolved: Vec<SocketAddr> = timeout(
        context.config.handshake_timeout,
        tokio::net::lookup_host(address),
    )
    .await
    .map_err(|_| "address resolution timed out".to_owned())?
    .map_err(|e| format!("cannot resolve: {e}"))?
    .collect();
    let ipv6 = context
        .endpoint
        .local_addr()
        .map(|a| a.is_ipv6())
        .unwrap_or(false);
    resolved
        .iter()
        .find(|a| a.is_ipv6() == ipv6)
        .or(resolved.first())
        .copied()
        .ok_or_else(|| "address resolves to nothing".to_owned())
}

/// Connects to `peer` at `address` as `node-<peer>.raft`, within the
/// handshake timeout.
pub(crate) async fn connect(
    context: &Context,
    peer: NodeId,
    address: &str,
) -> Result<quinn::Connection, String> {
    let target = resolve(context, address).await?;
    let connecting = context
        .endpoint
        .connect(target, &node_server_name(peer))
        .map_err(|e| e.to_string())?;
    timeout(context.config.handshake_timeout, connecting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// Connects to whatever node answers at `address`, within the handshake
/// timeout; its certificate must chain to the CA and name one node, whose
/// id is returned with the connection.
pub(crate) async fn connect_any(
    context: &Context,
    address: &str,
) -> Result<(quinn::Connection, NodeId), String> {
    let target = resolve(context, address).await?;
    let connecting = context
        .endpoint
        .connect_with(
            context.any_node_client.clone(),
            target,
            ANY_NODE_SERVER_NAME,
        )
        .map_err(|e| e.to_string())?;
    let connection = timeout(context.config.handshake_timeout, connecting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    match peer_node(&connection) {
        Some(id) => Ok((connection, id)),
        None => {
            // The verifier already refuses such certificates.
            connection.close(crate::close_code::REJECTED.into(), b"no node name");
            Err("the certificate names no node".to_owned())
        }
    }
}
