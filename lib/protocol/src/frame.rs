use crate::DecodeError;

/// Largest frame body either side accepts (1 MiB): far above any real message (a DTLS flight is a few
/// kilobytes), small enough that a corrupt length cannot exhaust memory.
pub const MAX_FRAME: usize = 1 << 20;

/// Whether a frame is a request, its reply, or an unsolicited event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A request; the peer answers with exactly one reply of the same id.
    Request = 1,
    /// The reply to the request with the same id.
    Reply = 2,
    /// An event pushed by the engine; id 0.
    Event = 3,
}

/// One decoded frame: its kind, request id and message body (tag byte and payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Request, reply or event.
    pub kind: FrameKind,
    /// Request id (echoed by the reply); 0 for events.
    pub id: u32,
    /// The message: a tag byte and its payload.
    pub body: Vec<u8>,
}

impl Frame {
    /// Encodes the frame with its length prefix, ready to write to the socket.
    pub fn encode(&self) -> Vec<u8> {
        let len = 5 + self.body.len();
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// Splits a byte stream into frames. Feed it whatever the socket returned; take frames out with
/// [`FrameReader::next_frame`]. A frame that is too large or has a bad header is reported once as an
/// error (with its id when known) and skipped, so the stream stays in sync and the connection lives on.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    skip: usize,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Appends bytes read from the socket.
    pub fn feed(&mut self, data: &[u8]) {
        let mut data = data;
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete frame, `None` if more bytes are needed, or an error for a frame that
    /// was discarded (`(id, error)`; id is 0 when the header was unreadable).
    pub fn next_frame(&mut self) -> Option<Result<Frame, (u32, DecodeError)>> {
        if self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            let id = if self.buf.len() >= 9 {
                u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
            } else {
                0
            };
            let have = self.buf.len() - 4;
            if have >= len {
                self.buf.drain(..4 + len);
            } else {
                self.skip = len - have;
                self.buf.clear();
            }
            return Some(Err((id, DecodeError::TooLarge(len))));
        }
        if self.buf.len() < 4 + len {
            return None;
        }
        let frame: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
        if frame.len() < 5 {
            return Some(Err((0, DecodeError::Truncated { field: "frame header", needed: 5 - frame.len() })));
        }
        let id = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        let kind = match frame[0] {
            1 => FrameKind::Request,
            2 => FrameKind::Reply,
            3 => FrameKind::Event,
            k => return Some(Err((id, DecodeError::UnknownFrameKind(k)))),
        };
        Some(Ok(Frame { kind, id, body: frame[5..].to_vec() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads() {
        let a = Frame { kind: FrameKind::Request, id: 7, body: vec![1, 2, 3] }.encode();
        let b = Frame { kind: FrameKind::Event, id: 0, body: vec![9] }.encode();
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for chunk in all.chunks(3) {
            r.feed(chunk);
            while let Some(f) = r.next_frame() {
                got.push(f.unwrap());
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, 7);
        assert_eq!(got[0].body, vec![1, 2, 3]);
        assert_eq!(got[1].kind, FrameKind::Event);
    }

    #[test]
    fn oversized_frame_is_skipped_and_stream_resyncs() {
        let mut big = ((MAX_FRAME + 10) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(&[1, 0, 0, 0, 42]);
        big.resize(4 + MAX_FRAME + 10, 0xAA);
        let next = Frame { kind: FrameKind::Request, id: 5, body: vec![1] }.encode();
        let mut r = FrameReader::new();
        r.feed(&big[..100]);
        match r.next_frame() {
            Some(Err((42, DecodeError::TooLarge(_)))) => {}
            other => panic!("expected TooLarge for id 42, got {other:?}"),
        }
        for chunk in big[100..].chunks(4096) {
            r.feed(chunk);
            assert!(r.next_frame().is_none());
        }
        r.feed(&next);
        assert_eq!(r.next_frame().unwrap().unwrap().id, 5);
    }

    #[test]
    fn bad_kind_is_reported_with_its_id() {
        let mut f = Frame { kind: FrameKind::Request, id: 3, body: vec![] }.encode();
        f[4] = 99;
        let mut r = FrameReader::new();
        r.feed(&f);
        assert_eq!(r.next_frame(), Some(Err((3, DecodeError::UnknownFrameKind(99)))));
        assert!(r.next_frame().is_none());
    }
}
