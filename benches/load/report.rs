//! The results as a console table, `results.json`, `results.md` and
//! `chart.svg`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::die;

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn latency(us: f64) -> String {
    if us.is_nan() {
        "?".into()
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn ratio(v: &Value) -> String {
    v.as_f64().map_or(String::new(), |r| format!("{r:.2}×"))
}

fn per_req(v: &Value) -> String {
    v.as_f64().map_or(String::new(), |us| format!("{us:.2}"))
}

/// The cells of one contender's row, shared by the console and markdown
/// tables.
fn cells(c: &Value) -> [String; 9] {
    [
        c["label"].as_str().unwrap_or("?").to_owned(),
        format!("{:.0}", num(&c["rps"])),
        latency(num(&c["p99_us"])),
        ratio(&c["ratio"]),
        per_req(&c["cpu_us_per_request"]),
        per_req(&c["cpu_us_per_request_with_nginx"]),
        format!("{:.2}", num(&c["tcp_accepts_per_request"])),
        format!("{:.1}", num(&c["peak_rss_kb"]) / 1024.0),
        c["errors"].to_string(),
    ]
}

const HEADERS: [&str; 9] = [
    "contender",
    "requests/s",
    "p99",
    "roomgate / this",
    "CPU µs/request",
    "with nginx",
    "TCP accepts/request",
    "peak RSS MiB",
    "errors",
];

/// Everything measured, as aligned text.
pub fn table(r: &Value) -> String {
    let mut s = String::new();
    let widths = [30, 10, 9, 15, 14, 10, 19, 12, 6];
    let line = |s: &mut String, cols: &[String]| {
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(s, "  {c:<w$}");
            } else {
                let _ = write!(s, " {c:>w$}");
            }
        }
        s.push('\n');
    };
    for sh in items(&r["shapes"]) {
        let _ = writeln!(
            s,
            "{}: {}\n  {}",
            sh["id"].as_str().unwrap_or("?"),
            sh["name"].as_str().unwrap_or(""),
            sh["wrk"].as_str().unwrap_or("")
        );
        line(&mut s, &HEADERS.map(str::to_owned));
        for c in items(&sh["contenders"]) {
            line(&mut s, &cells(c));
        }
    }
    for m in items(&r["idle"]) {
        let _ = writeln!(
            s,
            "idle keep-alive memory {:<8} {:>7} kB -> {:>7} kB with {} of {} connections: {:.2} KiB per connection",
            m["name"].as_str().unwrap_or("?"),
            m["rss_before_kb"],
            m["rss_after_kb"],
            m["held"],
            m["connections"],
            num(&m["kib_per_connection"]),
        );
    }
    s
}

/// Probes and roomgate's own figures, one paragraph.
pub fn footer(r: &Value) -> String {
    let p = &r["probes"];
    let g = &r["roomgate"];
    format!(
        "Probes of roomgate's primary / backup during {:.0} s of load with steady health (interval {} s): \
         {} / {}; bound run time / interval + 2 = {}.\n\
         roomgate: binary {} bytes, RSS after start {} kB, peak RSS over the shapes {} kB. \
         Whole run {:.0} s.",
        num(&p["seconds"]),
        p["interval_s"],
        p["primary"],
        p["backup"],
        p["bound"],
        g["binary_bytes"],
        g["start_rss_kb"],
        g["peak_rss_kb"],
        num(&r["run_seconds"]),
    )
}

pub fn write(out: &Path, r: &Value) {
    if let Err(e) = std::fs::create_dir_all(out) {
        die(&format!("{}: {e}", out.display()));
    }
    let json = serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
    for (name, text) in [
        ("results.json", json),
        ("results.md", markdown(r)),
        ("chart.svg", chart(r)),
    ] {
        let path = out.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            die(&format!("{}: {e}", path.display()));
        }
        println!("wrote {}", path.display());
    }
}

fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let mut s = format!(
        "# Load-shape matrix\n\n`{}`: {} round(s) of {} s per contender, interleaved (the order rotates \
         each round); {} CPU(s), {}; load average at start {}. roomgate, nginx and HAProxy run {} \
         workers (threads) each, the front nginx of E and F {}; no access logs. wrk runs on the same \
         machine. {}; {}; {}.\n\n\
         Requests/s and p99 (wrk's) are medians of the rounds (p50 too, in results.json); \"roomgate / this\" is the median of the \
         per-round ratios of requests/s. CPU µs/request is user + system time of the server's \
         processes (`/proc/<pid>/stat`) over the requests of the round, \"with nginx\" adds the \
         front nginx's. TCP accepts/request counts every connection the kernel accepted on the \
         machine during the round (`PassiveOpens`): 1.00 in D is a new connection per request; in \
         E and F the excess over 0 is nginx reopening upstream TCP connections (those over a unix \
         socket are not counted). Peak RSS is the server's \
         highest RSS sampled every 100 ms.\n\n",
        r["command"].as_str().unwrap_or(""),
        r["rounds"],
        r["seconds"],
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["load_average_at_start"].as_str().unwrap_or("?"),
        r["workers"],
        r["front_workers"],
        m["nginx"].as_str().unwrap_or("nginx"),
        m["haproxy"].as_str().unwrap_or("haproxy"),
        m["wrk"].as_str().unwrap_or("wrk"),
    );
    for sh in items(&r["shapes"]) {
        let _ = writeln!(
            s,
            "## {}: {}\n\n    {}\n",
            sh["id"].as_str().unwrap_or("?"),
            sh["name"].as_str().unwrap_or(""),
            sh["wrk"].as_str().unwrap_or("")
        );
        let _ = writeln!(
            s,
            "| {} | URL |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            HEADERS.join(" | ")
        );
        for c in items(&sh["contenders"]) {
            let _ = writeln!(
                s,
                "| {} | `{}` |",
                cells(c).join(" | "),
                c["url"].as_str().unwrap_or("")
            );
        }
        s.push('\n');
    }
    if let Some(first) = items(&r["idle"]).next() {
        let _ = writeln!(
            s,
            "## Idle keep-alive memory\n\nRSS of each server (nginx: master and workers) before and while \
             holding {} connections that each made one request (`GET /Lounge`), right after start.\n\n\
             | server | RSS before | RSS with the connections | held | KiB per connection |\n|---|---:|---:|---:|---:|",
            first["connections"]
        );
        for m in items(&r["idle"]) {
            let _ = writeln!(
                s,
                "| {} | {} kB | {} kB | {} | {:.2} |",
                m["name"].as_str().unwrap_or("?"),
                m["rss_before_kb"],
                m["rss_after_kb"],
                m["held"],
                num(&m["kib_per_connection"]),
            );
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "## Other\n\n{}\n\n![ratios](chart.svg)\n",
        footer(r).replace('\n', "\n\n")
    );
    s.push_str("## Servers and their configurations\n\n");
    for c in items(&r["servers"]) {
        let _ = writeln!(
            s,
            "- {}: `{}`",
            c["name"].as_str().unwrap_or("?"),
            c["command"].as_str().unwrap_or("")
        );
    }
    s.push_str(
        "\nThe front nginx's sites and upstreams are the shipped `deploy/nginx/` files with \
         ports, paths and upstream names substituted.\n\n",
    );
    for c in items(&r["configs"]) {
        let _ = writeln!(
            s,
            "<details><summary>{}</summary>\n\n```\n{}\n```\n\n</details>\n",
            c["name"].as_str().unwrap_or("?"),
            c["text"].as_str().unwrap_or("").trim_end()
        );
    }
    s
}

/// Bars of roomgate's requests/s ratio to each competitor, grouped by shape,
/// with lines at 1.0 and 0.9.
fn chart(r: &Value) -> String {
    let shapes: Vec<&Value> = items(&r["shapes"]).collect();
    let series = [
        ("nginx", "#3b6fb6", "vs nginx return 302"),
        ("haproxy", "#b5651d", "vs HAProxy"),
    ];
    let ratio_of = |sh: &Value, name: &str| {
        items(&sh["contenders"])
            .find(|c| c["name"] == name && !c["ratio"].is_null())
            .and_then(|c| c["ratio"].as_f64())
    };
    let top_ratio = shapes
        .iter()
        .flat_map(|sh| series.iter().filter_map(|(n, _, _)| ratio_of(sh, n)))
        .fold(1.2_f64, f64::max);
    let max = (top_ratio * 5.0).ceil() / 5.0;
    let (w, h, left, top, bottom) = (680.0, 340.0, 50.0, 34.0, 80.0);
    let plot_h = h - top - bottom;
    let y = |v: f64| top + plot_h - plot_h * v / max;
    let group_w = (w - left - 10.0) / shapes.len().max(1) as f64;
    let bar_w = group_w / 3.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"13\">roomgate's requests/s / competitor's \
         (median of {} round(s), {} CPU(s); higher is better)</text>\n",
        r["rounds"], r["machine"]["cores"]
    );
    let steps = (max / 0.2).round() as usize;
    for k in 0..=steps {
        let v = 0.2 * k as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}×</text>",
            w - 10.0,
            left - 4.0,
            y(v) + 4.0,
            y = y(v),
        );
    }
    for (g, sh) in shapes.iter().enumerate() {
        let x0 = left + g as f64 * group_w + bar_w / 2.0;
        for (k, (name, color, _)) in series.iter().enumerate() {
            let Some(v) = ratio_of(sh, name) else {
                continue;
            };
            let x = x0 + k as f64 * bar_w;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\">\
                 <title>{} {name}: {v:.2}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.2}</text>",
                y(v),
                bar_w - 3.0,
                y(0.0) - y(v),
                sh["id"].as_str().unwrap_or("?"),
                x + (bar_w - 3.0) / 2.0,
                y(v) - 3.0,
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\">{}</text>",
            x0 + bar_w - 1.5,
            y(0.0) + 16.0,
            sh["id"].as_str().unwrap_or("?"),
        );
    }
    for (v, dash) in [(1.0, ""), (0.9, " stroke-dasharray=\"4 3\"")] {
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#c00\"{dash}/>",
            w - 10.0,
            y = y(v),
        );
    }
    let legend_y = h - 40.0;
    for (k, (_, color, label)) in series.iter().enumerate() {
        let x = left + k as f64 * 170.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{legend_y}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{label}</text>",
            x + 14.0,
            legend_y + 9.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"{}\">Red lines: 1.0× and 0.9×. A-D direct; E, F behind nginx (only HAProxy \
         there).</text>",
        legend_y + 27.0
    );
    s.push_str("</svg>\n");
    s
}
