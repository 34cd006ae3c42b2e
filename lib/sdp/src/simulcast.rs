//! Reading rid-based simulcast from an offered m-line: `a=rid` (RFC 8851) and `a=simulcast`
//! (RFC 8853).

use crate::error::Error;
use crate::model::Media;

/// The most simulcast layers the server receives per track.
pub const MAX_LAYERS: usize = 3;

/// Whether `id` is a rid the server can use: 1 to 16 characters of `A-Z a-z 0-9 - _` (RFC 8851's
/// syntax, and at most what fits in a one-byte header extension element).
pub(crate) fn valid_rid(id: &str) -> bool {
    (1..=16).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The rids an m-line sends as simulcast layers, in the order of its `a=simulcast:send` list (the
/// web client lists the lowest layer first), at most [`MAX_LAYERS`] (later ones are left out, and
/// the answer then lists only these, so the sender does not send them). Empty when the m-line has
/// no `a=simulcast` with a `send` list: its `a=rid` lines, if any, are then ignored.
///
/// A `~` (layer paused for now) is stripped: the layer is still received when it resumes. Errors
/// name the m-line: a malformed `a=simulcast`, alternatives (`a,b`) for one layer, a rid that is
/// not a valid rid or repeats, or a listed rid without an `a=rid:<rid> send` line.
pub(crate) fn send_rids(index: usize, media: &Media) -> Result<Vec<String>, Error> {
    let Some(value) = &media.simulcast else {
        return Ok(Vec::new());
    };
    let err = |message: String| Error::media(index, &media.kind, message);
    let mut fields = value.split_whitespace();
    let mut send: Option<&str> = None;
    while let Some(direction) = fields.next() {
        let Some(list) = fields.next() else {
            return Err(err(format!(
                "a=simulcast:{value} needs `send <rid>;<rid>...` (RFC 8853)"
            )));
        };
        match direction {
            "send" if send.is_none() => send = Some(list),
            "recv" => {}
            _ => {
                return Err(err(format!(
                    "a=simulcast:{value} needs `send <rid>;<rid>...` (RFC 8853); `{direction}` is not a direction or repeats"
                )))
            }
        }
    }
    let Some(list) = send else {
        return Ok(Vec::new());
    };
    let mut rids: Vec<String> = Vec::new();
    for stream in list.split(';') {
        if stream.contains(',') {
            return Err(err(format!(
                "a=simulcast:{value} offers alternatives `{stream}` for one layer; the server needs exactly one rid per simulcast layer"
            )));
        }
        let rid = stream.strip_prefix('~').unwrap_or(stream);
        if !valid_rid(rid) {
            return Err(err(format!(
                "a=simulcast:{value}: `{rid}` is not a rid the server can use (1 to 16 characters of A-Z, a-z, 0-9, '-', '_')"
            )));
        }
        if rids.iter().any(|r| r == rid) {
            return Err(err(format!(
                "a=simulcast:{value} lists rid {rid} twice; each simulcast layer needs its own rid"
            )));
        }
        let declared = media.rids.iter().any(|line| {
            let mut f = line.split_whitespace();
            f.next() == Some(rid) && f.next() == Some("send")
        });
        if !declared {
            return Err(err(format!(
                "a=simulcast:{value} lists rid {rid} but the m-line has no `a=rid:{rid} send` line (RFC 8853 section 5.1)"
            )));
        }
        rids.push(rid.to_string());
    }
    rids.truncate(MAX_LAYERS);
    Ok(rids)
}
