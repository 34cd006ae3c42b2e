//! Fixtures and helpers shared by the integration tests.
#![allow(dead_code)]

use switchyard_sdp::{LocalTransport, SessionDescription};

pub const CHROME_OFFER: &str = include_str!("../fixtures/chrome_offer.sdp");
pub const FIREFOX_OFFER: &str = include_str!("../fixtures/firefox_offer.sdp");
pub const AIORTC_OFFER: &str = include_str!("../fixtures/aiortc_offer.sdp");
/// What Chrome 120+ offers on a publish connection with three rid simulcast layers
/// (`sendEncodings` q, h, f): no `a=ssrc` on the video m-line, RTX/RED/ULPFEC offered.
pub const CHROME_SIMULCAST_OFFER: &str = include_str!("../fixtures/chrome_simulcast_offer.sdp");

pub const SERVER_FINGERPRINT: &str = "D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F";
pub const CLIENT_FINGERPRINT: &str = "19:E2:1C:3B:4B:9F:81:E6:B8:5C:F4:A5:A8:D8:73:04:BB:05:2F:70:9F:04:A9:0E:05:E9:26:33:E8:70:88:A2";

/// The fixture text as a browser sends it: CRLF line ends.
pub fn crlf(fixture: &str) -> String {
    fixture.replace("\r\n", "\n").replace('\n', "\r\n")
}

pub fn parse(fixture: &str) -> SessionDescription {
    SessionDescription::parse(&crlf(fixture)).expect("fixture parses")
}

/// The server's transport: ICE-lite credentials and worker address.
pub fn server() -> LocalTransport {
    LocalTransport {
        ice_ufrag: "sWy1".into(),
        ice_pwd: "Qm8rT2vX9kL4pN7cB3hJ6w".into(),
        fingerprint_sha256: SERVER_FINGERPRINT.into(),
        candidate: "203.0.113.10:40000".parse().unwrap(),
        session_id: 7_001_234_567,
        session_version: 1,
    }
}

/// A load-generator client's transport.
pub fn client() -> LocalTransport {
    LocalTransport {
        ice_ufrag: "cLi9".into(),
        ice_pwd: "z8Yx7Wv6Ut5Sr4Qp3On2Ml".into(),
        fingerprint_sha256: CLIENT_FINGERPRINT.into(),
        candidate: "198.51.100.7:50000".parse().unwrap(),
        session_id: 42,
        session_version: 1,
    }
}

/// Splits SDP text into its session section and m-sections, each a list of lines (without CRLF).
/// Panics if any line end is not CRLF.
pub fn sections(sdp: &str) -> Vec<Vec<&str>> {
    assert!(sdp.ends_with("\r\n"), "SDP must end with CRLF");
    let body = &sdp[..sdp.len() - 2];
    let mut out: Vec<Vec<&str>> = vec![Vec::new()];
    for line in body.split("\r\n") {
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "bare line break in {line:?}"
        );
        if line.starts_with("m=") {
            out.push(Vec::new());
        }
        out.last_mut().unwrap().push(line);
    }
    out
}

/// The lines of a section that start with `prefix`.
pub fn lines_with<'a>(section: &[&'a str], prefix: &str) -> Vec<&'a str> {
    section
        .iter()
        .copied()
        .filter(|l| l.starts_with(prefix))
        .collect()
}
