//! A real nginx in front of a real [`Prosody`], set up as Jitsi Meet's
//! Debian package sets up its site (`/etc/nginx/sites-available/<domain>.conf`):
//!
//! - `/config.js` is a file (`alias $config_js_location`);
//! - `/http-bind` is proxied to Prosody's BOSH with
//!   `proxy_pass http://127.0.0.1:<port>/http-bind?prefix=$prefix&$args`
//!   and `proxy_set_header Host $http_host`, so Prosody picks the virtual
//!   host from the host name in the URL (see the 404 note in
//!   `support::prosody`);
//! - every other path serves the room page (`index.html`);
//! - optionally TLS (`listen ... ssl`) with a certificate from a test CA.
//!
//! nginx listens on 127.0.0.1 only and stops when the value drops.

use super::nginx::{free_port, Nginx};
use super::prosody::Prosody;
use super::tls::Leaf;

/// How the front is served.
pub struct FrontSpec {
    /// The host name of the URL (`server_name`, and the `Host` that nginx
    /// passes on to Prosody): `localhost` resolves without DNS.
    pub host: String,
    /// Serve https with this certificate (it must name `host`).
    pub tls: Option<Leaf>,
    /// The XMPP domain that config.js names (`hosts.domain`).
    pub domain: String,
}

impl FrontSpec {
    /// http on `host`, whose config.js names `host` as the XMPP domain:
    /// the usual Jitsi, where the site's host name is the XMPP domain.
    pub fn http(host: &str) -> FrontSpec {
        FrontSpec {
            host: host.to_owned(),
            tls: None,
            domain: host.to_owned(),
        }
    }

    /// Like [`FrontSpec::http`], over TLS with `leaf`.
    pub fn https(host: &str, leaf: &Leaf) -> FrontSpec {
        FrontSpec {
            tls: Some(leaf.clone()),
            ..FrontSpec::http(host)
        }
    }

    /// config.js names `domain` as the XMPP domain (a site whose host name
    /// is not the XMPP domain).
    pub fn domain(mut self, domain: &str) -> FrontSpec {
        self.domain = domain.to_owned();
        self
    }
}

/// nginx serving a Jitsi site for one [`Prosody`].
pub struct JitsiFront {
    /// `http(s)://<host>:<port>`: the server URL for roomgate.
    pub base: String,
    pub port: u16,
    pub nginx: Nginx,
}

impl JitsiFront {
    /// Starts nginx for `prosody` as `spec` says; returns once it listens.
    pub async fn start(prosody: &Prosody, spec: FrontSpec) -> JitsiFront {
        let port = free_port();
        let (listen, tls_lines, scheme) = match &spec.tls {
            Some(_) => (
                format!("127.0.0.1:{port} ssl"),
                "    ssl_certificate @DIR@/site.crt;\n    ssl_certificate_key @DIR@/site.key;\n",
                "https",
            ),
            None => (format!("127.0.0.1:{port}"), "", "http"),
        };
        let server = format!(
            "server {{
    listen {listen};
    server_name {host};
{tls_lines}
    root @DIR@/www;
    index index.html;
    set $prefix \"\";
    set $config_js_location @DIR@/site-config.js;

    location = /config.js {{
        alias $config_js_location;
    }}

    # BOSH
    location = /http-bind {{
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header Host $http_host;
        proxy_pass http://127.0.0.1:{prosody_port}/http-bind?prefix=$prefix&$args;
    }}

    location / {{
        try_files $uri /index.html;
    }}
}}
",
            host = spec.host,
            prosody_port = prosody.http_port,
        );
        let config_js = format!(
            "var config = {{\n    hosts: {{\n        domain: '{d}',\n        \
             muc: 'conference.{d}',\n    }},\n    bosh: '//{h}/http-bind',\n}};\n",
            d = spec.domain,
            h = spec.host,
        );
        let room_page = "<!DOCTYPE html><html><head><title>Jitsi Meet</title></head>\
                         <body><div id=\"react\"></div></body></html>\n";
        let mut files = vec![
            ("site-config.js", config_js.as_str()),
            ("www/index.html", room_page),
        ];
        if let Some(leaf) = &spec.tls {
            files.push(("site.crt", &leaf.cert_pem));
            files.push(("site.key", &leaf.key_pem));
        }
        let nginx = Nginx::start(&server, &files, port).await;
        JitsiFront {
            base: format!("{scheme}://{}:{port}", spec.host),
            port,
            nginx,
        }
    }
}
