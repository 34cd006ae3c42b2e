//! Serialising the model to SDP text, CRLF line ends, in the attribute order Chrome uses.

use std::fmt::Write;

use crate::model::{Codec, Media, SessionDescription};

impl SessionDescription {
    /// Writes the description as SDP text with CRLF line ends (including after the last line).
    ///
    /// Session lines come first (`v=`, `o=`, `s=`, other non-attribute lines, `t=`, then
    /// attributes), then each m-line with its `c=` line and attributes in Chrome's order: ICE and
    /// DTLS parameters, `a=mid`, extmaps, direction, msid, rtcp-mux, codecs (rtpmap, rtcp-fb, fmtp),
    /// SSRC groups and SSRCs, rids/simulcast, candidates, unknown attributes. The writer does not
    /// validate: whatever the model holds is written, so parsing the result gives the same model.
    pub fn to_sdp(&self) -> String {
        let mut out = String::with_capacity(1024 + 1024 * self.media.len());
        let mut line = |text: std::fmt::Arguments<'_>| {
            // Writing into a String cannot fail.
            let _ = out.write_fmt(text);
            out.push_str("\r\n");
        };
        let o = &self.origin;
        line(format_args!("v=0"));
        line(format_args!(
            "o={} {} {} {} {} {}",
            o.username, o.session_id, o.session_version, o.net_type, o.addr_type, o.address
        ));
        line(format_args!("s={}", self.session_name));
        for other in &self.other_lines {
            line(format_args!("{other}"));
        }
        line(format_args!("t={}", self.timing));
        for group in &self.groups {
            if group.mids.is_empty() {
                line(format_args!("a=group:{}", group.semantics));
            } else {
                line(format_args!(
                    "a=group:{} {}",
                    group.semantics,
                    group.mids.join(" ")
                ));
            }
        }
        if let Some(semantic) = &self.msid_semantic {
            line(format_args!("a=msid-semantic: {semantic}"));
        }
        if self.ice_lite {
            line(format_args!("a=ice-lite"));
        }
        if let Some(ufrag) = &self.ice_ufrag {
            line(format_args!("a=ice-ufrag:{ufrag}"));
        }
        if let Some(pwd) = &self.ice_pwd {
            line(format_args!("a=ice-pwd:{pwd}"));
        }
        if let Some(options) = &self.ice_options {
            line(format_args!("a=ice-options:{options}"));
        }
        for fingerprint in &self.fingerprints {
            line(format_args!("a=fingerprint:{fingerprint}"));
        }
        if let Some(setup) = self.setup {
            line(format_args!("a=setup:{setup}"));
        }
        for attribute in &self.other_attributes {
            line(format_args!("a={attribute}"));
        }
        for media in &self.media {
            write_media(media, &mut line);
        }
        out
    }
}

fn write_media(m: &Media, line: &mut impl FnMut(std::fmt::Arguments<'_>)) {
    let formats = if m.codecs.is_empty() {
        m.formats.join(" ")
    } else {
        m.codecs
            .iter()
            .map(|c| c.pt.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if formats.is_empty() {
        line(format_args!("m={} {} {}", m.kind, m.port, m.proto));
    } else {
        line(format_args!(
            "m={} {} {} {formats}",
            m.kind, m.port, m.proto
        ));
    }
    for other in &m.other_lines {
        line(format_args!("{other}"));
    }
    if let Some(connection) = &m.connection {
        line(format_args!("c={connection}"));
    }
    if let Some(ufrag) = &m.ice_ufrag {
        line(format_args!("a=ice-ufrag:{ufrag}"));
    }
    if let Some(pwd) = &m.ice_pwd {
        line(format_args!("a=ice-pwd:{pwd}"));
    }
    if let Some(options) = &m.ice_options {
        line(format_args!("a=ice-options:{options}"));
    }
    for fingerprint in &m.fingerprints {
        line(format_args!("a=fingerprint:{fingerprint}"));
    }
    if let Some(setup) = m.setup {
        line(format_args!("a=setup:{setup}"));
    }
    if let Some(mid) = &m.mid {
        line(format_args!("a=mid:{mid}"));
    }
    if m.bundle_only {
        line(format_args!("a=bundle-only"));
    }
    for ext in &m.extmaps {
        let id = match ext.direction {
            Some(dir) => format!("{}/{dir}", ext.id),
            None => ext.id.to_string(),
        };
        match &ext.attributes {
            Some(attributes) => line(format_args!("a=extmap:{id} {} {attributes}", ext.uri)),
            None => line(format_args!("a=extmap:{id} {}", ext.uri)),
        }
    }
    line(format_args!("a={}", m.direction));
    if let Some((stream, track)) = &m.msid {
        if track.is_empty() {
            line(format_args!("a=msid:{stream}"));
        } else {
            line(format_args!("a=msid:{stream} {track}"));
        }
    }
    if m.rtcp_mux {
        line(format_args!("a=rtcp-mux"));
    }
    if m.rtcp_rsize {
        line(format_args!("a=rtcp-rsize"));
    }
    for codec in &m.codecs {
        write_codec(codec, line);
    }
    for group in &m.ssrc_groups {
        let ssrcs: Vec<String> = group.ssrcs.iter().map(u32::to_string).collect();
        line(format_args!(
            "a=ssrc-group:{} {}",
            group.semantics,
            ssrcs.join(" ")
        ));
    }
    for info in &m.ssrcs {
        if let Some(cname) = &info.cname {
            line(format_args!("a=ssrc:{} cname:{cname}", info.ssrc));
        }
        match (&info.msid_stream, &info.msid_track) {
            (Some(stream), Some(track)) => {
                line(format_args!("a=ssrc:{} msid:{stream} {track}", info.ssrc))
            }
            (Some(stream), None) => line(format_args!("a=ssrc:{} msid:{stream}", info.ssrc)),
            _ => {}
        }
        if info.cname.is_none() && info.msid_stream.is_none() {
            // An SSRC whose attributes the model does not keep: still list it (the parser accepts
            // the attribute-less form) so the SSRC survives a round trip.
            line(format_args!("a=ssrc:{}", info.ssrc));
        }
    }
    for rid in &m.rids {
        line(format_args!("a=rid:{rid}"));
    }
    if let Some(simulcast) = &m.simulcast {
        line(format_args!("a=simulcast:{simulcast}"));
    }
    for candidate in &m.candidates {
        line(format_args!("a=candidate:{candidate}"));
    }
    if m.end_of_candidates {
        line(format_args!("a=end-of-candidates"));
    }
    for attribute in &m.other_attributes {
        line(format_args!("a={attribute}"));
    }
}

fn write_codec(c: &Codec, line: &mut impl FnMut(std::fmt::Arguments<'_>)) {
    match c.channels {
        Some(channels) => line(format_args!(
            "a=rtpmap:{} {}/{}/{channels}",
            c.pt, c.name, c.clock_rate
        )),
        None => line(format_args!(
            "a=rtpmap:{} {}/{}",
            c.pt, c.name, c.clock_rate
        )),
    }
    for fb in &c.rtcp_fb {
        line(format_args!("a=rtcp-fb:{} {fb}", c.pt));
    }
    if let Some(fmtp) = &c.fmtp {
        line(format_args!("a=fmtp:{} {fmtp}", c.pt));
    }
}
