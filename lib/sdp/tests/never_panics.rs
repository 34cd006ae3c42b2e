//! Mutated, truncated and random descriptions: parsing and every function that takes a parsed
//! description must return (Ok or Err), never panic; and whatever parses writes back to text that
//! parses to a fixed point.

mod common;

use common::*;
use switchyard_sdp::{
    answer_publish, answer_subscribe_client, check_subscribe_answer, offer_subscribe,
    remote_transport, MediaKind, PublishAnswer, SessionDescription, SubscribeSlot,
};

/// SplitMix64: deterministic, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NASTY: &[&str] = &[
    ":",
    " ",
    "/",
    "=",
    "*",
    "-",
    "0",
    "9",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "a",
    "m",
    "é",
    "\u{fffd}",
    "\u{2003}",
    "\u{85}",
    "4294967296",
    "99999999999999999999",
    "255",
    "128",
    "-1",
    "typ",
    "a=",
    "m=",
    "v=0",
    ";",
];

const ATTRIBUTES: &[&str] = &[
    "mid",
    "rtpmap",
    "fmtp",
    "rtcp-fb",
    "ssrc",
    "ssrc-group",
    "msid",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "fingerprint",
    "setup",
    "rtcp-mux",
    "rtcp-rsize",
    "bundle-only",
    "extmap",
    "candidate",
    "end-of-candidates",
    "rid",
    "simulcast",
    "group",
    "msid-semantic",
    "ice-lite",
    "sendonly",
    "recvonly",
    "inactive",
    "sendrecv",
    "sctp-port",
];

fn mutate(rng: &mut Rng, base: &str) -> String {
    let mut lines: Vec<String> = base.split('\n').map(str::to_string).collect();
    match rng.below(9) {
        // Truncate the whole text.
        0 => {
            let cut = rng.below(base.len() + 1);
            return String::from_utf8_lossy(&base.as_bytes()[..cut]).into_owned();
        }
        // Truncate some lines.
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(lines.len());
                let cut = rng.below(lines[i].len() + 1);
                lines[i] = String::from_utf8_lossy(&lines[i].as_bytes()[..cut]).into_owned();
            }
        }
        // Delete lines.
        2 => {
            for _ in 0..1 + rng.below(20) {
                if lines.len() > 1 {
                    let i = rng.below(lines.len());
                    lines.remove(i);
                }
            }
        }
        // Move or duplicate lines.
        3 => {
            for _ in 0..1 + rng.below(10) {
                let from = rng.below(lines.len());
                let to = rng.below(lines.len());
                let line = lines[from].clone();
                if rng.below(2) == 0 {
                    lines.remove(from);
                }
                lines.insert(to.min(lines.len()), line);
            }
        }
        // Overwrite characters.
        4 => {
            for _ in 0..1 + rng.below(12) {
                let i = rng.below(lines.len());
                let chars: Vec<char> = lines[i].chars().collect();
                let at = rng.below(chars.len() + 1);
                let mut out: String = chars[..at].iter().collect();
                let token: &&str = rng.pick(NASTY);
                out.push_str(token);
                out.extend(chars.iter().skip(at + rng.below(3)));
                lines[i] = out;
            }
        }
        // Replace the value of some attribute with junk.
        5 => {
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(lines.len());
                if let Some((name, _)) = lines[i].split_once(':') {
                    let junk: String = (0..rng.below(5)).map(|_| *rng.pick(NASTY)).collect();
                    lines[i] = format!("{name}:{junk}");
                }
            }
        }
        // Insert synthetic attribute lines built from nasty tokens.
        6 => {
            for _ in 0..1 + rng.below(10) {
                let value: Vec<&str> = (0..rng.below(10)).map(|_| *rng.pick(NASTY)).collect();
                let line = format!("a={}:{}", rng.pick(ATTRIBUTES), value.join(""));
                let at = rng.below(lines.len() + 1);
                lines.insert(at, line);
            }
        }
        // Shuffle everything after v=0.
        7 => {
            for i in (2..lines.len()).rev() {
                let j = 1 + rng.below(i);
                lines.swap(i, j);
            }
        }
        // Pure noise, still starting with v=0 half the time.
        _ => {
            let len = rng.below(400);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let noise = String::from_utf8_lossy(&bytes).into_owned();
            return if rng.below(2) == 0 {
                format!("v=0\r\n{noise}")
            } else {
                noise
            };
        }
    }
    lines.join("\n")
}

fn exercise(text: &str, slots: &[SubscribeSlot]) {
    let Ok(first) = SessionDescription::parse(text) else {
        return;
    };
    let written = first.to_sdp();
    let second = SessionDescription::parse(&written).unwrap_or_else(|e| {
        panic!("our own output does not parse: {e}\n--- input\n{text:?}\n--- output\n{written:?}")
    });
    let rewritten = second.to_sdp();
    let third = SessionDescription::parse(&rewritten).unwrap();
    assert_eq!(second, third, "not a fixed point\n--- input\n{text:?}");
    assert_eq!(
        written.matches("\r\n").count(),
        written.matches('\n').count()
    );

    let _ = remote_transport(&first);
    let _ = answer_subscribe_client(&first, &client());
    let _ = check_subscribe_answer(slots, &first);
    if let Ok(PublishAnswer {
        sdp: answer,
        tracks,
        ..
    }) = answer_publish(&first, &server())
    {
        SessionDescription::parse(&answer).expect("the publish answer parses");
        let slots: Vec<SubscribeSlot> = tracks
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                if t.rids.is_empty() {
                    assert_ne!(t.ssrc, 0, "a track without rids has its SSRC");
                } else {
                    // Simulcast: the control daemon gives each subscriber its outgoing SSRC.
                    assert_eq!(t.ssrc, 0, "a simulcast track has no single SSRC");
                    t.ssrc = 0x5000_0000 + i as u32;
                }
                SubscribeSlot {
                    mid: format!("s{i}"),
                    kind: t.kind.clone(),
                    track: Some(t),
                }
            })
            .collect();
        if !slots.is_empty() {
            // The tracks the server accepted can always be offered (they come from one publisher,
            // so their payload types cannot clash).
            let offer = offer_subscribe(&slots, &server()).expect("accepted tracks can be offered");
            SessionDescription::parse(&offer).expect("the subscribe offer parses");
        }
    }
}

#[test]
fn mutated_offers_never_panic() {
    let slots = vec![
        SubscribeSlot {
            mid: "0".into(),
            kind: MediaKind::Audio,
            track: None,
        },
        SubscribeSlot {
            mid: "1".into(),
            kind: MediaKind::Video,
            track: None,
        },
    ];
    let fixtures: Vec<String> = [
        CHROME_OFFER,
        FIREFOX_OFFER,
        AIORTC_OFFER,
        CHROME_SIMULCAST_OFFER,
    ]
    .iter()
    .flat_map(|f| [f.to_string(), crlf(f)])
    .collect();
    // SDP_FUZZ_ROUNDS / SDP_FUZZ_SEED run a longer or different campaign by hand.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("SDP_FUZZ_ROUNDS", 6000) as usize;
    let mut rng = Rng(env("SDP_FUZZ_SEED", 0x5EED_F5D9));
    let mut parsed_ok = 0;
    for round in 0..rounds {
        let base = &fixtures[round % fixtures.len()];
        let mut text = mutate(&mut rng, base);
        if rng.below(4) == 0 {
            text = mutate(&mut rng, &text);
        }
        if SessionDescription::parse(&text).is_ok() {
            parsed_ok += 1;
        }
        exercise(&text, &slots);
    }
    // The mutations must leave a good share parseable, or the deeper functions go unexercised.
    assert!(
        parsed_ok > rounds / 4,
        "only {parsed_ok} of {rounds} mutated inputs parsed"
    );
}

#[test]
fn every_prefix_of_every_fixture() {
    for fixture in [
        CHROME_OFFER,
        FIREFOX_OFFER,
        AIORTC_OFFER,
        CHROME_SIMULCAST_OFFER,
    ] {
        let text = crlf(fixture);
        for cut in 0..=text.len() {
            exercise(&text[..cut], &[]);
        }
    }
}

#[test]
fn degenerate_inputs() {
    for text in [
        "", "\r\n", "v", "v=", "v=0", "v=0\r\nm=", "v=0\r\nm=audio", "v=0\r\nm=audio 9", "v=0\r\nm=audio 9 RTP/AVP",
        "v=0\r\nm=audio 65536 RTP/AVP 0", "v=0\r\nm=audio 0 RTP/AVP 0 0 0 0 255 -1 x",
        "v=0\r\na=group:BUNDLE\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:1 cname:c\r\n",
        "v=0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=fingerprint:sha-256 AA\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=ssrc-group:FID\r\na=ssrc-group:SIM\r\na=ssrc:1 msid:\r\n",
        "\u{feff}v=0", "v=0\0", "v=0\r\n\u{0}=x",
    ] {
        exercise(text, &[]);
    }
}
