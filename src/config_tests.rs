//! Unit tests of config validation.
use super::*;

#[test]
fn explore() {
    for c in [
        "servers:\n  a:\n    url: \"https://a.example\n",
        "servers:\n\ta: 1\n",
        "servers:\n  a:\n    url: https://a.example\n   b: c\n",
        "servers:\n  a: [x\n  b: y\n",
        "servers:\n  a:\n    url: https://a.example\n  - b\n",
        "servers:\n  a:\n    url: https://a.example\n    url: https://b.example\n",
        "servers:\n  a:\n    url: https://a.example\nservers:\n  b:\n    url: https://b.example\n",
        "servers:\n  a:\n    url: https://a.example\nrooms:\n  A:\n    aliases: [x, X]\n",
        "servers:\n  a:\n    url: https://a.example\nrooms:\n  A:\n    aliases: x\n",
        "servers:\n  a:\n    url: https://a.example\nrooms:\n  A:\n    servers: a\n",
        "servers:\n  a:\n    url: https://a.example\n  b:\n    url: https://b.example\nrooms:\n  A:\n    servers:\n      - a\n      - a\n",
        "servers:\n  a:\n    url: https://a.example\n    check:\n      kind: http\n      expect_status: \"200 - 399\"\n",
        "servers:\n  a:\n    url: https://a.example\n    check:\n      kind: http\n      expect_status: 600\n",
        "servers:\n  a:\n    url: https://a.example\n    check:\n      kind: http\n      expect_status: 99\n",
        "servers:\n  a:\n    url: https://a.example\n    check:\n      kind: http\n      expect_status: abc\n",
        "servers:\n  a:\n    url: https://a.example\n    ca_file: 5\n",
        "[1, 2]\n",
        "just text\n",
        "servers:\n  a:\n    url: https://a.example\nunlisted:\n  allow: maybe\n",
    ] {
        let r = Config::parse(c, "routes.yaml", Path::new(".")).map(|_| ()).map_err(|e| e.to_string());
        println!("----\n{c}RESULT {r:?}");
    }
}
