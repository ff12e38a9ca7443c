//! The wg-quick configuration a machine receives, in exactly the documented format.

use crate::keys::{PrivateKey, PublicKey};
use crate::overlay::Ipv4Cidr;
use crate::reconcile::HUB_MTU;
use crate::secret::Secret;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Written in place of the private key when the machine brought its own public key.
pub const KEY_PLACEHOLDER: &str = "REPLACE_WITH_YOUR_PRIVATE_KEY";

pub struct MachineConfig<'a> {
    pub machine_name: &'a str,
    pub address: Ipv4Addr,
    pub cidr: Ipv4Cidr,
    /// `None` when the user keeps their own key: a placeholder is written instead.
    pub private_key: Option<&'a PrivateKey>,
    pub org_name: &'a str,
    pub hub_public_key: &'a PublicKey,
    pub endpoint: &'a str,
    pub listen_port: u16,
}

/// Names are validated to hold no control characters; this is the second line of defence so a
/// name can never start a new line in the file.
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Renders the config. Secret, because it may hold the machine's private key: the key goes
/// straight from its own zeroized buffer into a string allocated once, large enough that it never
/// moves (a reallocation would leave a copy of the key behind in freed memory).
pub fn render(c: &MachineConfig<'_>) -> Secret<String> {
    let key = c.private_key.map(PrivateKey::expose_base64);
    let key = key
        .as_ref()
        .map_or(KEY_PLACEHOLDER, |k| k.expose().as_str());
    // Each name character may become at most 4 bytes; the rest is a few hundred bytes.
    let room = 512 + 4 * (c.machine_name.len() + c.org_name.len()) + c.endpoint.len();
    let mut s = String::with_capacity(room);
    let _ = writeln!(
        s,
        "# wg0.conf — generated for machine \"{}\"",
        comment_safe(c.machine_name)
    );
    s.push_str("[Interface]\n");
    let _ = writeln!(s, "PrivateKey          = {key}");
    let _ = writeln!(s, "Address             = {}/{}", c.address, c.cidr.prefix());
    let _ = writeln!(s, "MTU                 = {HUB_MTU}");
    s.push('\n');
    s.push_str("[Peer]\n");
    let _ = writeln!(s, "# tenant hub for \"{}\"", comment_safe(c.org_name));
    let _ = writeln!(s, "PublicKey           = {}", c.hub_public_key);
    let _ = writeln!(
        s,
        "Endpoint            = {}",
        endpoint(c.endpoint, c.listen_port)
    );
    let _ = writeln!(s, "AllowedIPs          = {}", c.cidr);
    s.push_str("PersistentKeepalive = 25\n");
    Secret::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_format() {
        let hub = PrivateKey::generate().public_key();
        let key = PrivateKey::generate();
        let text = render(&MachineConfig {
            machine_name: "laptop \"a\" 🚀",
            address: Ipv4Addr::new(10, 100, 0, 2),
            cidr: "10.100.0.0/16".parse().unwrap(),
            private_key: Some(&key),
            org_name: "Acme",
            hub_public_key: &hub,
            endpoint: "vpn.example.com",
            listen_port: 51820,
        });
        let want = format!(
            "# wg0.conf — generated for machine \"laptop \"a\" 🚀\"\n[Interface]\nPrivateKey          = {}\nAddress             = 10.100.0.2/16\nMTU                 = 1420\n\n[Peer]\n# tenant hub for \"Acme\"\nPublicKey           = {hub}\nEndpoint            = vpn.example.com:51820\nAllowedIPs          = 10.100.0.0/16\nPersistentKeepalive = 25\n",
            key.expose_base64().expose()
        );
        assert_eq!(text.expose(), &want);
    }

    #[test]
    fn the_key_is_written_once_into_a_buffer_that_never_moves() {
        // A reallocation would leave a copy of the key in freed memory; the planned capacity,
        // unchanged after rendering the longest names, shows there was none.
        let (name, org) = ("🚀".repeat(64), "\u{85}".repeat(64));
        let key = PrivateKey::generate();
        let hub = key.public_key();
        let text = render(&MachineConfig {
            machine_name: &name,
            address: Ipv4Addr::new(10, 100, 0, 2),
            cidr: "10.100.0.0/16".parse().unwrap(),
            private_key: Some(&key),
            org_name: &org,
            hub_public_key: &hub,
            endpoint: "vpn.example.com",
            listen_port: 51820,
        });
        let planned = 512 + 4 * (name.len() + org.len()) + "vpn.example.com".len();
        assert_eq!(text.expose().capacity(), planned);
        assert!(!format!("{text:?}").contains(key.expose_base64().expose().as_str()));
    }

    #[test]
    fn no_line_injection_placeholder_and_ipv6_endpoint() {
        let hub = PrivateKey::generate().public_key();
        let text = render(&MachineConfig {
            machine_name: "x\n[Peer]\nAllowedIPs = 0.0.0.0/0",
            address: Ipv4Addr::new(10, 0, 0, 2),
            cidr: "10.0.0.0/24".parse().unwrap(),
            private_key: None,
            org_name: "o\r\nrg",
            hub_public_key: &hub,
            endpoint: "2001:db8::1",
            listen_port: 1,
        });
        let t = text.expose();
        assert_eq!(t.lines().filter(|l| l.starts_with("[Peer]")).count(), 1);
        assert_eq!(t.lines().filter(|l| l.starts_with("AllowedIPs")).count(), 1);
        assert!(t.contains(&format!("PrivateKey          = {KEY_PLACEHOLDER}\n")));
        assert!(t.contains("Endpoint            = [2001:db8::1]:1\n"));
    }
}
