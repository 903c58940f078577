//! Choosing and checking ports.
//!
//! A "free" port is found by binding port 0 and releasing it: another process can grab it before
//! nats-server binds it, so the supervisor retries with a new one when nats-server reports
//! "address already in use". A requested port is checked by binding it, which fails the same way
//! nats-server would (both use SO_REUSEADDR, so a port in TIME_WAIT counts as free).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};

use crate::NatsdError;

/// Bind `host:0`, read the port the OS chose, release it.
pub(crate) fn pick_free_port(host: &str) -> Result<u16, NatsdError> {
    let listener = TcpListener::bind((host, 0))
        .map_err(|e| NatsdError::io(format!("could not find a free port on {host}"), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| NatsdError::io(format!("could not find a free port on {host}"), e))?
        .port();
    Ok(port)
}

/// Whether `host:port` can be bound now. `Ok(false)` when it is in use; other failures (an
/// unknown host, a privileged port) are errors.
pub(crate) fn port_is_free(host: &str, port: u16) -> Result<bool, NatsdError> {
    match TcpListener::bind((host, port)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(false),
        Err(e) => Err(NatsdError::io(
            format!("could not listen on {host}:{port} (is the host an address of this machine?)"),
            e,
        )),
    }
}

/// The host to put in a client URL for a server listening on `host`: a wildcard address becomes
/// loopback, an IPv6 literal gets brackets.
pub(crate) fn url_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => format!("[{}]", Ipv6Addr::LOCALHOST),
        Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_become_loopback_in_urls() {
        assert_eq!(url_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(url_host("::"), "[::1]");
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(url_host("localhost"), "localhost");
    }

    #[test]
    fn a_bound_port_is_not_free_and_a_released_one_is() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!port_is_free("127.0.0.1", port).unwrap());
        drop(listener);
        assert!(port_is_free("127.0.0.1", port).unwrap());
        assert_ne!(pick_free_port("127.0.0.1").unwrap(), 0);
    }
}
