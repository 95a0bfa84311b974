//! Name resolution for probes: the system resolver, except for names that
//! RFC 6761 reserves as never resolving.
//!
//! RFC 6761 section 6.4: name resolution APIs and libraries "SHOULD
//! recognize `invalid` names as special and SHOULD always return immediate
//! negative responses". glibc does not; it asks the configured DNS server,
//! so a `.invalid` server URL would send a query off the machine on every
//! probe and, on a slow resolver, spend the probe's timeout waiting for the
//! answer it already knows.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

/// `getaddrinfo` on a blocking thread, with `.invalid` answered at once.
#[derive(Clone)]
pub struct Resolver {
    /// hyper-util's wrapper around `getaddrinfo`.
    system: GaiResolver,
}

impl Resolver {
    /// The system resolver with the RFC 6761 rule in front.
    pub fn new() -> Resolver {
        Resolver {
            system: GaiResolver::new(),
        }
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

/// Whether `host` is `invalid` or a name below it (any case, with or without
/// the trailing dot of a fully qualified name).
pub fn is_invalid_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let Some(tld) = host.rsplit('.').next() else {
        return false;
    };
    tld.eq_ignore_ascii_case("invalid")
}

impl Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.system.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if is_invalid_name(name.as_str()) {
            let err = io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} does not resolve: .invalid names never do (RFC 6761)",
                    name.as_str()
                ),
            );
            return Box::pin(std::future::ready(Err(err)));
        }
        let lookup = self.system.call(name);
        Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names() {
        for name in ["invalid", "x.invalid", "a.b.INVALID", "x.invalid."] {
            assert!(is_invalid_name(name), "{name}");
        }
        for name in [
            "invalid.example",
            "xinvalid",
            "localhost",
            "meet.ffmuc.net",
            "",
        ] {
            assert!(!is_invalid_name(name), "{name}");
        }
    }

    #[tokio::test]
    async fn invalid_names_fail_at_once_without_asking_anyone() {
        let mut resolver = Resolver::new();
        let name: Name = "jitsi.invalid".parse().unwrap();
        let err = resolver.call(name).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("RFC 6761"), "{err}");
    }
}
