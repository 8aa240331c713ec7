//! Broker URLs: `mqtt://host[:port]` (1883) and `mqtts://host[:port]` (8883).

use std::fmt;
use std::str::FromStr;

/// Where a broker listens and whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// A broker URL that could not be read; the message quotes it and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} {reason}; expected mqtt://host:port or mqtts://host:port")]
pub struct BrokerUrlError {
    pub url: String,
    pub reason: &'static str,
}

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(url: &str) -> Result<Self, BrokerUrlError> {
        let bad = |reason| BrokerUrlError {
            url: url.to_owned(),
            reason,
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad("has no mqtt:// or mqtts:// scheme"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| bad("has an invalid port"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_split_with_default_ports() {
        assert_eq!(
            "mqtts://broker.local".parse(),
            Ok(BrokerUrl {
                tls: true,
                host: "broker.local".into(),
                port: 8883
            })
        );
        let plain: BrokerUrl = "mqtt://127.0.0.1:1884/".parse().expect("valid");
        assert_eq!((plain.tls, plain.port), (false, 1884));
        assert_eq!(plain.to_string(), "mqtt://127.0.0.1:1884");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = "http://x".parse::<BrokerUrl>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"http://x\" has no mqtt:// or mqtts:// scheme; expected mqtt://host:port or mqtts://host:port"
        );
        assert_eq!(
            "mqtt://h:99999".parse::<BrokerUrl>().unwrap_err().reason,
            "has an invalid port"
        );
        assert_eq!(
            "mqtt://:1883".parse::<BrokerUrl>().unwrap_err().reason,
            "has no host"
        );
    }
}
