//! A tolerant line parser from SDP text into [`SessionDescription`].
//!
//! Tolerant of what browsers and libraries actually send: LF or CRLF line ends, blank lines,
//! surrounding whitespace, attributes in any order, unknown line types and attributes (kept
//! verbatim), `a=rtcp-fb:*`, static payload types without `a=rtpmap`. Strict where a wrong guess
//! would mislead the server: a line that is not `<letter>=<value>`, or a known attribute whose
//! value does not have the required shape, is an [`Error::Syntax`] naming the line. Nothing in here
//! indexes or slices unchecked, so no input panics.

use std::collections::{BTreeMap, HashMap};

use crate::error::Error;
use crate::model::{
    Candidate, Codec, Direction, Extmap, Fingerprint, Group, Media, MediaKind, Origin,
    SessionDescription, Setup, SsrcGroup, SsrcInfo,
};

impl SessionDescription {
    /// Parses an SDP offer or answer (RFC 8866, as WebRTC endpoints write it) into the model.
    ///
    /// The first non-blank line must be `v=0`. Unknown lines and attributes are kept raw; a known
    /// attribute with a malformed value, or a line that is not `<letter>=<value>`, is an
    /// [`Error::Syntax`] quoting the line and its number. Never panics, whatever the input.
    pub fn parse(sdp: &str) -> Result<Self, Error> {
        Parser::default().run(sdp)
    }
}

/// Quotes a line in an error message, shortened to 80 characters.
fn quote(line: &str) -> String {
    let mut q: String = line.chars().take(80).collect();
    if q.len() < line.len() {
        q.push_str("...");
    }
    format!("`{q}`")
}

fn syntax(line: usize, message: impl Into<String>) -> Error {
    Error::Syntax {
        line,
        message: message.into(),
    }
}

/// Static RTP payload types (RFC 3551) that browsers list without an `a=rtpmap`.
fn static_codec(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        26 => ("JPEG", 90000),
        31 => ("H261", 90000),
        34 => ("H263", 90000),
        _ => return None,
    })
}

fn parse_pt(line: usize, text: &str, what: &str) -> Result<u8, Error> {
    match text.parse::<u8>() {
        Ok(pt) if pt <= 127 => Ok(pt),
        _ => Err(syntax(
            line,
            format!("{what}: payload type `{text}` is not a number from 0 to 127"),
        )),
    }
}

fn parse_ssrc(line: usize, text: &str, what: &str) -> Result<u32, Error> {
    text.parse::<u32>().map_err(|_| {
        syntax(
            line,
            format!("{what}: SSRC `{text}` is not a number from 0 to 4294967295"),
        )
    })
}

/// The per-m-line state while its lines are read; [`MediaBuilder::finish`] turns the collected
/// rtpmap/fmtp/rtcp-fb lines into codecs in format-list order.
struct MediaBuilder {
    media: Media,
    direction: Option<Direction>,
    rtpmaps: BTreeMap<u8, (String, u32, Option<u8>)>,
    fmtps: BTreeMap<u8, String>,
    rtcp_fbs: BTreeMap<u8, Vec<String>>,
    rtcp_fb_all: Vec<String>,
    ssrc_index: HashMap<u32, usize>,
}

impl MediaBuilder {
    fn new(line: usize, value: &str) -> Result<Self, Error> {
        let mut fields = value.split_whitespace();
        let (Some(kind), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(syntax(
                line,
                format!(
                    "m-line {} needs `m=<media> <port> <proto> <formats>`",
                    quote(&format!("m={value}"))
                ),
            ));
        };
        // `<port>/<number of ports>` is legal but meaningless for WebRTC: keep the port.
        let port_text = port.split('/').next().unwrap_or(port);
        let port = port_text.parse::<u16>().map_err(|_| {
            syntax(
                line,
                format!("m-line port `{port}` is not a number from 0 to 65535"),
            )
        })?;
        let mut media = Media::new(MediaKind::from_name(kind));
        media.port = port;
        media.proto = proto.to_string();
        media.formats = fields.map(str::to_string).collect();
        Ok(MediaBuilder {
            media,
            direction: None,
            rtpmaps: BTreeMap::new(),
            fmtps: BTreeMap::new(),
            rtcp_fbs: BTreeMap::new(),
            rtcp_fb_all: Vec::new(),
            ssrc_index: HashMap::new(),
        })
    }

    fn ssrc_mut(&mut self, ssrc: u32) -> &mut SsrcInfo {
        let ssrcs = &mut self.media.ssrcs;
        let index = *self.ssrc_index.entry(ssrc).or_insert_with(|| {
            ssrcs.push(SsrcInfo::new(ssrc));
            ssrcs.len() - 1
        });
        &mut ssrcs[index]
    }

    fn attribute(&mut self, line: usize, name: &str, value: Option<&str>) -> Result<(), Error> {
        let raw = || match value {
            Some(v) => format!("{name}:{v}"),
            None => name.to_string(),
        };
        let need = || {
            value
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| syntax(line, format!("a={name} needs a value")))
        };
        let m = &mut self.media;
        match name {
            "mid" => m.mid = Some(need()?.to_string()),
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => {
                self.direction = Direction::from_name(name)
            }
            "rtpmap" => {
                let v = need()?;
                let (pt, encoding) = v.split_once(char::is_whitespace).ok_or_else(|| {
                    syntax(
                        line,
                        format!(
                            "{} needs `a=rtpmap:<pt> <name>/<clock rate>`",
                            quote(&format!("a={}", raw()))
                        ),
                    )
                })?;
                let pt = parse_pt(line, pt, "a=rtpmap")?;
                let mut parts = encoding.trim().split('/');
                let name_part = parts.next().unwrap_or("").trim();
                let clock = parts.next().and_then(|c| c.trim().parse::<u32>().ok());
                let (false, Some(clock)) = (name_part.is_empty(), clock) else {
                    return Err(syntax(
                        line,
                        format!(
                            "{} needs `<name>/<clock rate>` after the payload type",
                            quote(&format!("a={}", raw()))
                        ),
                    ));
                };
                let channels = match parts.next() {
                    None => None,
                    Some(c) => Some(c.trim().parse::<u8>().map_err(|_| {
                        syntax(
                            line,
                            format!(
                                "{}: channel count is not a small number",
                                quote(&format!("a={}", raw()))
                            ),
                        )
                    })?),
                };
                self.rtpmaps
                    .entry(pt)
                    .or_insert((name_part.to_string(), clock, channels));
            }
            "fmtp" => {
                let v = need()?;
                let (pt, params) = v.split_once(char::is_whitespace).unwrap_or((v, ""));
                let pt = parse_pt(line, pt, "a=fmtp")?;
                self.fmtps.entry(pt).or_insert(params.trim().to_string());
            }
            "rtcp-fb" => {
                let v = need()?;
                let (pt, fb) = v.split_once(char::is_whitespace).ok_or_else(|| {
                    syntax(
                        line,
                        format!(
                            "{} needs `a=rtcp-fb:<pt> <type>`",
                            quote(&format!("a={}", raw()))
                        ),
                    )
                })?;
                let fb = fb.split_whitespace().collect::<Vec<_>>().join(" ");
                if pt == "*" {
                    self.rtcp_fb_all.push(fb);
                } else {
                    let pt = parse_pt(line, pt, "a=rtcp-fb")?;
                    self.rtcp_fbs.entry(pt).or_default().push(fb);
                }
            }
            "ssrc" => {
                let v = need()?;
                let (ssrc, attr) = v.split_once(char::is_whitespace).unwrap_or((v, ""));
                let ssrc = parse_ssrc(line, ssrc, "a=ssrc")?;
                let attr = attr.trim();
                let (attr_name, attr_value) = attr.split_once(':').unwrap_or((attr, ""));
                let info = self.ssrc_mut(ssrc);
                match attr_name {
                    "cname" if !attr_value.trim().is_empty() => {
                        info.cname = Some(attr_value.trim().to_string())
                    }
                    "msid" => {
                        let mut ids = attr_value.split_whitespace();
                        info.msid_stream = ids.next().map(str::to_string);
                        info.msid_track = ids.next().map(str::to_string);
                    }
                    _ => {}
                }
            }
            "ssrc-group" => {
                let v = need()?;
                let mut fields = v.split_whitespace();
                let semantics = fields.next().unwrap_or("").to_string();
                let ssrcs = fields
                    .map(|s| parse_ssrc(line, s, "a=ssrc-group"))
                    .collect::<Result<Vec<_>, _>>()?;
                m.ssrc_groups.push(SsrcGroup { semantics, ssrcs });
            }
            "msid" => {
                let v = need()?;
                let mut ids = v.split_whitespace();
                let stream = ids.next().unwrap_or("").to_string();
                let track = ids.next().unwrap_or("").to_string();
                m.msid = Some((stream, track));
            }
            "ice-ufrag" => m.ice_ufrag = Some(need()?.to_string()),
            "ice-pwd" => m.ice_pwd = Some(need()?.to_string()),
            "ice-options" => m.ice_options = Some(need()?.to_string()),
            "fingerprint" => m.fingerprints.push(parse_fingerprint(line, need()?)?),
            "setup" => m.setup = Some(parse_setup(line, need()?)?),
            "rtcp-mux" => m.rtcp_mux = true,
            "rtcp-rsize" => m.rtcp_rsize = true,
            "bundle-only" => m.bundle_only = true,
            "end-of-candidates" => m.end_of_candidates = true,
            "extmap" => m.extmaps.push(parse_extmap(line, need()?)?),
            "candidate" => m.candidates.push(parse_candidate(line, need()?)?),
            "rid" => m.rids.push(need()?.to_string()),
            "simulcast" => m.simulcast = Some(need()?.to_string()),
            _ => m.other_attributes.push(raw()),
        }
        Ok(())
    }

    fn finish(mut self, session_direction: Option<Direction>) -> Media {
        let mut media = self.media;
        media.direction = self
            .direction
            .or(session_direction)
            .unwrap_or(Direction::SendRecv);
        if media.proto.to_ascii_uppercase().contains("RTP") {
            let mut seen = [false; 128];
            for format in &media.formats {
                let Ok(pt) = format.parse::<u8>() else {
                    continue;
                };
                let Some(slot) = seen.get_mut(usize::from(pt)) else {
                    continue;
                };
                if std::mem::replace(slot, true) {
                    continue;
                }
                let (name, clock_rate, channels) = match self.rtpmaps.remove(&pt) {
                    Some(map) => map,
                    None => match static_codec(pt) {
                        Some((name, clock)) => (name.to_string(), clock, None),
                        None => continue,
                    },
                };
                let mut rtcp_fb = self.rtcp_fb_all.clone();
                rtcp_fb.extend(self.rtcp_fbs.remove(&pt).unwrap_or_default());
                media.codecs.push(Codec {
                    pt,
                    name,
                    clock_rate,
                    channels,
                    fmtp: self.fmtps.remove(&pt).filter(|f| !f.is_empty()),
                    rtcp_fb,
                });
            }
        }
        media
    }
}

fn parse_fingerprint(line: usize, value: &str) -> Result<Fingerprint, Error> {
    let mut fields = value.split_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(algorithm), Some(value), None) => Ok(Fingerprint {
            algorithm: algorithm.to_string(),
            value: value.to_string(),
        }),
        _ => Err(syntax(
            line,
            format!(
                "{} needs `a=fingerprint:<hash function> <hex bytes>`",
                quote(&format!("a=fingerprint:{value}"))
            ),
        )),
    }
}

fn parse_setup(line: usize, value: &str) -> Result<Setup, Error> {
    Setup::from_name(value).ok_or_else(|| {
        syntax(
            line,
            format!("a=setup:{value} is not one of active, passive, actpass, holdconn"),
        )
    })
}

fn parse_extmap(line: usize, value: &str) -> Result<Extmap, Error> {
    let bad = || {
        syntax(
            line,
            format!(
                "{} needs `a=extmap:<id>[/<direction>] <uri>`",
                quote(&format!("a=extmap:{value}"))
            ),
        )
    };
    let mut fields = value.split_whitespace();
    let id_dir = fields.next().ok_or_else(bad)?;
    let uri = fields.next().ok_or_else(bad)?.to_string();
    let rest = fields.collect::<Vec<_>>().join(" ");
    let (id, direction) = match id_dir.split_once('/') {
        Some((id, dir)) => (id, Some(Direction::from_name(dir).ok_or_else(bad)?)),
        None => (id_dir, None),
    };
    Ok(Extmap {
        id: id.parse().map_err(|_| bad())?,
        direction,
        uri,
        attributes: (!rest.is_empty()).then_some(rest),
    })
}

/// Parses the value after `a=candidate:` (RFC 8839 section 5.1).
pub(crate) fn parse_candidate(line: usize, value: &str) -> Result<Candidate, Error> {
    let bad = |what: &str| {
        syntax(
            line,
            format!(
                "{}: {what}; expected `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...`",
                quote(&format!("a=candidate:{value}"))
            ),
        )
    };
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [foundation, component, transport, priority, address, port, typ_kw, typ, rest @ ..] =
        fields.as_slice()
    else {
        return Err(bad("too few fields"));
    };
    if !typ_kw.eq_ignore_ascii_case("typ") {
        return Err(bad("the seventh field is not `typ`"));
    }
    Ok(Candidate {
        foundation: foundation.to_string(),
        component: component
            .parse()
            .map_err(|_| bad("component is not a number"))?,
        transport: transport.to_string(),
        priority: priority
            .parse()
            .map_err(|_| bad("priority is not a 32-bit number"))?,
        address: address.to_string(),
        port: port
            .parse()
            .map_err(|_| bad("port is not a number from 0 to 65535"))?,
        typ: typ.to_string(),
        extensions: rest.iter().map(|s| s.to_string()).collect(),
    })
}

#[derive(Default)]
struct Parser {
    sdp: SessionDescription,
    session_direction: Option<Direction>,
    current: Option<MediaBuilder>,
    finished: Vec<MediaBuilder>,
    seen_version: bool,
}

impl Parser {
    fn run(mut self, text: &str) -> Result<SessionDescription, Error> {
        self.sdp.session_name = "-".into();
        self.sdp.timing = "0 0".into();
        for (i, raw) in text.split('\n').enumerate() {
            let number = i + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let (typ, value) = match line.split_once('=') {
                Some((t, v))
                    if t.len() == 1 && t.as_bytes().iter().all(u8::is_ascii_alphabetic) =>
                {
                    (t, v)
                }
                _ => {
                    return Err(syntax(
                        number,
                        format!(
                            "{} is not an SDP line of the form `<letter>=<value>`",
                            quote(line)
                        ),
                    ))
                }
            };
            if !self.seen_version {
                if typ != "v" || value.trim() != "0" {
                    return Err(syntax(
                        number,
                        format!("SDP must start with `v=0`, found {}", quote(line)),
                    ));
                }
                self.seen_version = true;
                continue;
            }
            self.line(number, line, typ, value)?;
        }
        if !self.seen_version {
            return Err(syntax(
                0,
                "the SDP is empty; expected a description starting with `v=0`",
            ));
        }
        let mut sdp = self.sdp;
        let direction = self.session_direction;
        sdp.media = self
            .finished
            .into_iter()
            .chain(self.current)
            .map(|b| b.finish(direction))
            .collect();
        Ok(sdp)
    }

    fn line(&mut self, number: usize, line: &str, typ: &str, value: &str) -> Result<(), Error> {
        if typ == "m" {
            let builder = MediaBuilder::new(number, value)?;
            if let Some(done) = self.current.replace(builder) {
                self.finished.push(done);
            }
            return Ok(());
        }
        let (name, attr_value) = match value.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (value.trim(), None),
        };
        if let Some(media) = self.current.as_mut() {
            return match typ {
                "a" => media.attribute(number, name, attr_value),
                "c" => {
                    media.media.connection = Some(value.trim().to_string());
                    Ok(())
                }
                _ => {
                    media.media.other_lines.push(line.to_string());
                    Ok(())
                }
            };
        }
        self.session_line(number, line, typ, value, name, attr_value)
    }

    fn session_line(
        &mut self,
        number: usize,
        line: &str,
        typ: &str,
        value: &str,
        name: &str,
        attr_value: Option<&str>,
    ) -> Result<(), Error> {
        let sdp = &mut self.sdp;
        match typ {
            "v" => {}
            "o" => sdp.origin = parse_origin(number, value)?,
            "s" => sdp.session_name = value.trim().to_string(),
            "t" => sdp.timing = value.trim().to_string(),
            "a" => {
                let need = || {
                    attr_value
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| syntax(number, format!("a={name} needs a value")))
                };
                match name {
                    "ice-lite" => sdp.ice_lite = true,
                    "ice-ufrag" => sdp.ice_ufrag = Some(need()?.to_string()),
                    "ice-pwd" => sdp.ice_pwd = Some(need()?.to_string()),
                    "ice-options" => sdp.ice_options = Some(need()?.to_string()),
                    "fingerprint" => sdp.fingerprints.push(parse_fingerprint(number, need()?)?),
                    "setup" => sdp.setup = Some(parse_setup(number, need()?)?),
                    "group" => {
                        let mut fields = need()?.split_whitespace();
                        sdp.groups.push(Group {
                            semantics: fields.next().unwrap_or("").to_string(),
                            mids: fields.map(str::to_string).collect(),
                        });
                    }
                    "msid-semantic" => {
                        sdp.msid_semantic = Some(attr_value.unwrap_or("").trim().to_string())
                    }
                    _ => {
                        if let Some(direction) = Direction::from_name(name) {
                            self.session_direction = Some(direction);
                        }
                        sdp.other_attributes.push(value.trim().to_string());
                    }
                }
            }
            _ => sdp.other_lines.push(line.to_string()),
        }
        Ok(())
    }
}

fn parse_origin(line: usize, value: &str) -> Result<Origin, Error> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [username, session_id, session_version, net_type, addr_type, address] = fields.as_slice()
    else {
        return Err(syntax(
            line,
            format!(
                "{} needs `o=<username> <session id> <version> IN IP4 <address>`",
                quote(&format!("o={value}"))
            ),
        ));
    };
    Ok(Origin {
        username: username.to_string(),
        session_id: session_id.to_string(),
        session_version: session_version.to_string(),
        net_type: net_type.to_string(),
        addr_type: addr_type.to_string(),
        address: address.to_string(),
    })
}
