//! Rooms and participants: the sans-I/O core of the SFU session logic.
//!
//! A [`Room`] knows who is in it, which tracks each participant publishes (on which engine transport),
//! and, for each participant, the m-line slots of their subscribe connection and which engine
//! subscriptions are in place. It never talks to the engine or a socket: the hub asks it what to offer
//! next and what to subscribe or unsubscribe after an answer, and carries that out.
//!
//! A room also has a [`Mode`]: in the mesh modes (C2C, P2P) none of the SFU state is used (browsers
//! connect to each other and the server only relays their signaling); its `epoch` changes at every
//! switch between the mesh and the SFU so messages meant for the old topology can be told apart.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_protocol::TransportId;
use switchyard_sdp::{MediaKind, PublishedTrack, SubscribeSlot};

use crate::mode::Mode;

/// Who owns what a subscribe slot carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSource {
    /// The publishing participant.
    pub owner: String,
    /// Their publish transport.
    pub transport: TransportId,
}

/// One participant's subscribe connection as negotiated with them.
#[derive(Debug, Default)]
pub struct Subscription {
    /// The engine transport, once created.
    pub transport: Option<TransportId>,
    /// Slots the next offer will carry.
    pub slots: Vec<SubscribeSlot>,
    /// Parallel to `slots`: where each slot's track comes from.
    pub sources: Vec<Option<SlotSource>>,
    /// The latest offer version sent.
    pub version: u64,
    /// The offer awaiting an answer: its version, slots and sources.
    pub in_flight: Option<(u64, Vec<SubscribeSlot>, Vec<Option<SlotSource>>)>,
    /// Slots changed since the last offer.
    pub dirty: bool,
    /// Engine subscriptions in place: (publisher transport, ssrc) and whether the track is video.
    pub installed: BTreeMap<(TransportId, u32), bool>,
    next_mid: u32,
}

/// Engine subscription changes an answer calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SubscriptionDiff {
    /// (publisher transport, ssrc, is_video) to subscribe.
    pub add: Vec<(TransportId, u32, bool)>,
    /// (publisher transport, ssrc) to unsubscribe.
    pub remove: Vec<(TransportId, u32)>,
}

/// A person in a room.
#[derive(Debug)]
pub struct Participant {
    /// Id, unique on this server ("p7").
    pub id: String,
    /// Display name.
    pub name: String,
    /// Microphone on.
    pub audio: bool,
    /// Camera on.
    pub video: bool,
    /// Sharing a screen.
    pub screen: bool,
    /// Can run the mesh modes (said so in `join`).
    pub mesh: bool,
    /// The publish transport, once the first offer arrived.
    pub publish: Option<TransportId>,
    /// Tracks accepted from the latest publish offer.
    pub tracks: Vec<PublishedTrack>,
    /// The subscribe side.
    pub sub: Subscription,
}

/// A room.
#[derive(Debug, Default)]
pub struct Room {
    /// Participants by id, in join order of their numeric ids.
    pub participants: BTreeMap<u64, Participant>,
    /// The room's topology.
    pub mode: Mode,
    /// Incremented at every switch between the mesh and the SFU.
    pub epoch: u64,
}

fn mid_for(kind: &MediaKind, n: u32) -> String {
    match kind {
        MediaKind::Audio => format!("a{n}"),
        MediaKind::Video => format!("v{n}"),
        _ => format!("m{n}"),
    }
}

impl Participant {
    /// A participant who has just joined.
    pub fn new(id: String, name: String) -> Participant {
        Participant {
            id,
            name,
            audio: true,
            video: true,
            screen: false,
            mesh: false,
            publish: None,
            tracks: Vec::new(),
            sub: Subscription::default(),
        }
    }
}

impl Subscription {
    /// Brings the slots in line with `wanted` (every other participant's tracks): kept tracks keep
    /// their slot, departed ones leave an inactive slot behind, new ones get new slots (mids are never
    /// reused, so a browser never sees one m-line change identity).
    pub fn reconcile(&mut self, wanted: &[(SlotSource, PublishedTrack)]) {
        let key = |s: &SlotSource, t: &PublishedTrack| (s.transport, t.ssrc);
        let wanted_keys: BTreeSet<_> = wanted.iter().map(|(s, t)| key(s, t)).collect();
        for i in 0..self.slots.len() {
            let present = match (&self.sources[i], &self.slots[i].track) {
                (Some(s), Some(t)) => wanted_keys.contains(&key(s, t)),
                _ => true,
            };
            if !present {
                self.slots[i].track = None;
                self.sources[i] = None;
                self.dirty = true;
            }
        }
        let have: BTreeSet<_> = self
            .slots
            .iter()
            .zip(&self.sources)
            .filter_map(|(sl, so)| Some(key(so.as_ref()?, sl.track.as_ref()?)))
            .collect();
        for (source, track) in wanted {
            if have.contains(&key(source, track)) {
                continue;
            }
            // The engine forwards payload types unchanged, and one BUNDLE group cannot use one payload
            // type for two codecs: a track that would clash with one already offered is left out
            // (rooms of one kind of client never clash; mixed rooms may).
            if let Some(clash) = self.payload_type_clash(track) {
                tracing::warn!(
                    ssrc = track.ssrc,
                    pt = track.codec.pt,
                    codec = %track.codec.name,
                    offered = %clash,
                    "track not offered: its payload type is already used for another codec"
                );
                continue;
            }
            self.next_mid += 1;
            self.slots.push(SubscribeSlot {
                mid: mid_for(&track.kind, self.next_mid),
                kind: track.kind.clone(),
                track: Some(track.clone()),
            });
            self.sources.push(Some(source.clone()));
            self.dirty = true;
        }
    }

    /// The codec name already offered on `track`'s payload type, if it is a different codec.
    fn payload_type_clash(&self, track: &PublishedTrack) -> Option<String> {
        let c = &track.codec;
        self.slots.iter().filter_map(|s| s.track.as_ref()).map(|t| &t.codec).find_map(|o| {
            let same = o.name.eq_ignore_ascii_case(&c.name) && o.clock_rate == c.clock_rate && o.channels == c.channels && o.fmtp == c.fmtp;
            (o.pt == c.pt && !same).then(|| o.name.clone())
        })
    }

    /// Forgets an offer that could not be sent, so later changes can be offered.
    pub fn abandon_offer(&mut self) {
        self.in_flight = None;
        self.dirty = true;
    }

    /// The next offer to send, if the slots changed and no offer awaits an answer: (version, slots).
    pub fn take_offer(&mut self) -> Option<(u64, Vec<SubscribeSlot>)> {
        if !self.dirty || self.in_flight.is_some() || self.transport.is_none() || self.slots.is_empty() {
            return None;
        }
        self.version += 1;
        self.dirty = false;
        self.in_flight = Some((self.version, self.slots.clone(), self.sources.clone()));
        Some((self.version, self.slots.clone()))
    }

    /// Accepts the answer to offer `version`: returns the engine subscription changes it calls for.
    pub fn accept_answer(&mut self, version: u64) -> Result<SubscriptionDiff, String> {
        match &self.in_flight {
            Some((v, _, _)) if *v == version => {}
            Some((v, _, _)) => return Err(format!("answer is for offer {version}, the outstanding offer is {v}")),
            None => return Err("no subscribe offer is awaiting an answer".into()),
        }
        let Some((_, slots, sources)) = self.in_flight.take() else {
            return Err("no subscribe offer is awaiting an answer".into());
        };
        let mut wanted = BTreeMap::new();
        for (slot, source) in slots.iter().zip(&sources) {
            if let (Some(t), Some(s)) = (&slot.track, source) {
                wanted.insert((s.transport, t.ssrc), t.kind == MediaKind::Video);
            }
        }
        let mut diff = SubscriptionDiff::default();
        for (k, video) in &wanted {
            if !self.installed.contains_key(k) {
                diff.add.push((k.0, k.1, *video));
            }
        }
        for k in self.installed.keys() {
            if !wanted.contains_key(k) {
                diff.remove.push(*k);
            }
        }
        self.installed = wanted;
        Ok(diff)
    }

    /// The offer awaiting an answer, if any.
    pub fn outstanding(&self) -> Option<&[SubscribeSlot]> {
        self.in_flight.as_ref().map(|(_, s, _)| s.as_slice())
    }
}

impl Room {
    /// An empty room in `mode`.
    pub fn new(mode: Mode) -> Room {
        Room { participants: BTreeMap::new(), mode, epoch: 1 }
    }

    /// Whether every participant can run the mesh.
    pub fn mesh_capable(&self) -> bool {
        self.participants.values().all(|p| p.mesh)
    }

    /// Moves the room to `mode`. A switch between the mesh and the SFU starts a new epoch; leaving
    /// the SFU forgets every participant's SFU session and returns the engine transports to remove
    /// (their routes go with them). A C2C <-> P2P change is only a new name.
    pub fn switch(&mut self, mode: Mode) -> Vec<TransportId> {
        let mut gone = Vec::new();
        if mode == self.mode {
            return gone;
        }
        if mode.is_mesh() != self.mode.is_mesh() {
            self.epoch += 1;
        }
        if self.mode == Mode::Sfu && mode.is_mesh() {
            for p in self.participants.values_mut() {
                gone.extend(p.publish.take());
                gone.extend(p.sub.transport.take());
                p.tracks.clear();
                p.sub = Subscription::default();
            }
        }
        self.mode = mode;
        gone
    }

    /// Every track published in the room except `viewer`'s, with its source.
    pub fn tracks_for(&self, viewer: u64) -> Vec<(SlotSource, PublishedTrack)> {
        let mut v = Vec::new();
        for (id, p) in &self.participants {
            if *id == viewer {
                continue;
            }
            let Some(transport) = p.publish else { continue };
            for t in &p.tracks {
                v.push((SlotSource { owner: p.id.clone(), transport }, t.clone()));
            }
        }
        v
    }

    /// Re-derives every participant's subscribe slots; returns the ids with changes not yet offered.
    pub fn reconcile_all(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.participants.keys().copied().collect();
        let mut changed = Vec::new();
        for id in ids {
            let wanted = self.tracks_for(id);
            if let Some(p) = self.participants.get_mut(&id) {
                p.sub.reconcile(&wanted);
                if p.sub.dirty {
                    changed.push(id);
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdp::Codec;

    fn track(kind: MediaKind, ssrc: u32) -> PublishedTrack {
        PublishedTrack {
            mid: "0".into(),
            kind,
            ssrc,
            codec: Codec { pt: 96, name: "VP8".into(), clock_rate: 90000, channels: None, fmtp: None, rtcp_fb: vec![] },
            stream_id: "s".into(),
            track_id: format!("t{ssrc}"),
            cname: "c".into(),
        }
    }

    fn room_with(n: u64) -> Room {
        let mut r = Room::default();
        for i in 1..=n {
            let mut p = Participant::new(format!("p{i}"), format!("n{i}"));
            p.publish = Some(i * 10);
            p.tracks = vec![track(MediaKind::Audio, i as u32 * 100), track(MediaKind::Video, i as u32 * 100 + 1)];
            p.sub.transport = Some(i * 10 + 1);
            r.participants.insert(i, p);
        }
        r
    }

    #[test]
    fn each_participant_is_offered_every_other_participants_tracks() {
        let mut r = room_with(3);
        r.reconcile_all();
        let p1 = r.participants.get_mut(&1).unwrap();
        let (v, slots) = p1.sub.take_offer().unwrap();
        assert_eq!(v, 1);
        let ssrcs: Vec<u32> = slots.iter().filter_map(|s| s.track.as_ref().map(|t| t.ssrc)).collect();
        assert_eq!(ssrcs, vec![200, 201, 300, 301]);
        assert!(p1.sub.take_offer().is_none(), "one offer in flight at a time");
        let diff = p1.sub.accept_answer(1).unwrap();
        assert_eq!(diff.add, vec![(20, 200, false), (20, 201, true), (30, 300, false), (30, 301, true)]);
        assert!(diff.remove.is_empty());
    }

    #[test]
    fn a_departure_leaves_inactive_slots_and_unsubscribes() {
        let mut r = room_with(3);
        r.reconcile_all();
        {
            let p1 = r.participants.get_mut(&1).unwrap();
            p1.sub.take_offer().unwrap();
            p1.sub.accept_answer(1).unwrap();
        }
        r.participants.remove(&2);
        r.reconcile_all();
        let p1 = r.participants.get_mut(&1).unwrap();
        let (v, slots) = p1.sub.take_offer().unwrap();
        assert_eq!(v, 2);
        assert_eq!(slots.len(), 4, "m-lines are never removed");
        assert_eq!(slots.iter().filter(|s| s.track.is_none()).count(), 2);
        assert!(p1.sub.accept_answer(1).is_err(), "stale version");
        let diff = p1.sub.accept_answer(2).unwrap();
        assert_eq!(diff.remove, vec![(20, 200), (20, 201)]);
        assert!(diff.add.is_empty());
    }

    #[test]
    fn leaving_the_sfu_forgets_every_session_and_starts_a_new_epoch() {
        let mut r = room_with(3);
        r.reconcile_all();
        r.participants.get_mut(&1).unwrap().sub.take_offer().unwrap();
        assert_eq!((r.mode, r.epoch), (Mode::Sfu, 0));
        let mut gone = r.switch(Mode::P2p);
        gone.sort_unstable();
        assert_eq!(gone, vec![10, 11, 20, 21, 30, 31]);
        assert_eq!((r.mode, r.epoch), (Mode::P2p, 1));
        for p in r.participants.values() {
            assert!(p.publish.is_none() && p.tracks.is_empty() && p.sub.transport.is_none());
            assert!(p.sub.slots.is_empty() && p.sub.in_flight.is_none() && p.sub.installed.is_empty());
        }
        // Nothing to offer in the mesh.
        assert!(r.reconcile_all().is_empty());
        // C2C <-> P2P is the same mesh: same epoch, nothing removed.
        assert!(r.switch(Mode::C2c).is_empty());
        assert_eq!(r.epoch, 1);
        // Back to the SFU: a new epoch; sessions start again from the clients' publish offers.
        assert!(r.switch(Mode::Sfu).is_empty());
        assert_eq!((r.mode, r.epoch), (Mode::Sfu, 2));
        assert!(r.switch(Mode::Sfu).is_empty());
        assert_eq!(r.epoch, 2);
    }

    #[test]
    fn the_room_is_mesh_capable_only_if_everyone_is() {
        let mut r = Room::new(Mode::C2c);
        assert!(r.mesh_capable());
        let mut a = Participant::new("p1".into(), "a".into());
        a.mesh = true;
        r.participants.insert(1, a);
        assert!(r.mesh_capable());
        r.participants.insert(2, Participant::new("p2".into(), "bot".into()));
        assert!(!r.mesh_capable());
    }

    #[test]
    fn a_track_whose_payload_type_clashes_with_an_offered_codec_is_left_out() {
        let mut sub = Subscription { transport: Some(1), ..Default::default() };
        let src = |t| SlotSource { owner: "p9".into(), transport: t };
        let vp8 = track(MediaKind::Video, 1);
        let mut opus96 = track(MediaKind::Audio, 2);
        opus96.codec = Codec { pt: 96, name: "opus".into(), clock_rate: 48000, channels: Some(2), fmtp: None, rtcp_fb: vec![] };
        let vp8_again = track(MediaKind::Video, 3);
        sub.reconcile(&[(src(10), vp8), (src(20), opus96), (src(30), vp8_again)]);
        let ssrcs: Vec<u32> = sub.slots.iter().filter_map(|s| s.track.as_ref().map(|t| t.ssrc)).collect();
        assert_eq!(ssrcs, vec![1, 3], "Opus on 96 clashes with VP8 on 96; a second VP8 on 96 does not");
    }

    #[test]
    fn changes_during_an_offer_wait_for_its_answer() {
        let mut r = room_with(2);
        r.reconcile_all();
        r.participants.get_mut(&1).unwrap().sub.take_offer().unwrap();
        let mut p3 = Participant::new("p3".into(), "n3".into());
        p3.publish = Some(30);
        p3.tracks = vec![track(MediaKind::Video, 301)];
        r.participants.insert(3, p3);
        r.reconcile_all();
        let p1 = r.participants.get_mut(&1).unwrap();
        assert!(p1.sub.take_offer().is_none());
        p1.sub.accept_answer(1).unwrap();
        let (v, slots) = p1.sub.take_offer().unwrap();
        assert_eq!((v, slots.len()), (2, 3));
    }
}
