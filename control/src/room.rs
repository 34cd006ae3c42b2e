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
    /// The track's id in the engine ([`Track::id`]).
    pub track: u32,
}

/// A track a participant publishes, as declared to the engine (`AddTrack`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The control daemon's id for the track, unique per publish transport.
    pub id: u32,
    /// What the publish offer said about it (a simulcast track has `rids` and SSRC 0).
    pub published: PublishedTrack,
}

/// An engine subscription in place (or to put in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Whether the track is video.
    pub video: bool,
    /// The SSRC the subscriber sees (the slot's `a=ssrc`).
    pub out_ssrc: u32,
}

/// The key of a subscription: (publisher transport, track id).
pub type TrackKey = (TransportId, u32);

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
    /// Engine subscriptions in place, by (publisher transport, track).
    pub installed: BTreeMap<TrackKey, Installed>,
    /// The largest height the subscriber asked for (`video-size`) per video track it is offered.
    pub prefs: BTreeMap<TrackKey, u16>,
    next_mid: u32,
}

/// Engine subscription changes an answer calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SubscriptionDiff {
    /// (publisher transport, track) to subscribe, with what the subscriber sees.
    pub add: Vec<(TrackKey, Installed)>,
    /// (publisher transport, track) to unsubscribe.
    pub remove: Vec<TrackKey>,
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
    pub tracks: Vec<Track>,
    /// The subscribe side.
    pub sub: Subscription,
    next_track: u32,
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
            next_track: 0,
        }
    }

    /// Takes the tracks of a new publish answer: a track the previous answer had too (same mid,
    /// SSRC, rids and payload type) keeps its id, the others get new ones. Returns the tracks to
    /// declare to the engine and the ids of those that are gone.
    pub fn set_tracks(&mut self, tracks: Vec<PublishedTrack>) -> (Vec<Track>, Vec<u32>) {
        let same = |a: &PublishedTrack, b: &PublishedTrack| {
            a.mid == b.mid && a.ssrc == b.ssrc && a.rids == b.rids && a.codec.pt == b.codec.pt && a.kind == b.kind
        };
        let mut old = std::mem::take(&mut self.tracks);
        let mut added = Vec::new();
        for published in tracks {
            let track = match old.iter().position(|t| same(&t.published, &published)) {
                // Kept: the stream id or other labels may have changed; the engine's view has not.
                Some(i) => Track { id: old.remove(i).id, published },
                None => {
                    self.next_track += 1;
                    let t = Track { id: self.next_track, published };
                    added.push(t.clone());
                    t
                }
            };
            self.tracks.push(track);
        }
        (added, old.into_iter().map(|t| t.id).collect())
    }
}

impl Subscription {
    /// Brings the slots in line with `wanted` (every other participant's tracks): kept tracks keep
    /// their slot, departed ones leave an inactive slot behind, new ones get new slots (mids are never
    /// reused, so a browser never sees one m-line change identity).
    ///
    /// A slot's track carries the SSRC the subscriber will see: the publisher's for a plain track,
    /// and for a simulcast track (whose layers the engine rewrites onto one stream) or one whose SSRC
    /// another slot already uses, a fresh random one of this subscriber's, without the rids.
    pub fn reconcile(&mut self, wanted: &[(SlotSource, PublishedTrack)]) {
        let key = |s: &SlotSource| (s.transport, s.track);
        let wanted_keys: BTreeSet<_> = wanted.iter().map(|(s, _)| key(s)).collect();
        for i in 0..self.slots.len() {
            let present = match (&self.sources[i], &self.slots[i].track) {
                (Some(s), Some(_)) => wanted_keys.contains(&key(s)),
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
            .filter_map(|(sl, so)| {
                sl.track.as_ref()?;
                Some(key(so.as_ref()?))
            })
            .collect();
        self.prefs.retain(|k, _| have.contains(k));
        for (source, track) in wanted {
            if have.contains(&key(source)) {
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
            let mut track = track.clone();
            let taken = self.slots.iter().filter_map(|s| s.track.as_ref()).any(|t| t.ssrc == track.ssrc);
            // Two publishers may pick the same SSRC; the engine rewrites it, so give one a fresh one.
            if !track.rids.is_empty() || track.ssrc == 0 || taken {
                track.ssrc = self.fresh_ssrc();
                track.rids.clear();
            }
            self.next_mid += 1;
            self.slots.push(SubscribeSlot { mid: mid_for(&track.kind, self.next_mid), kind: track.kind.clone(), track: Some(track) });
            self.sources.push(Some(source.clone()));
            self.dirty = true;
        }
    }

    /// A random non-zero SSRC no slot of this connection uses.
    fn fresh_ssrc(&self) -> u32 {
        loop {
            let ssrc = rand::random::<u32>();
            if ssrc != 0 && !self.slots.iter().filter_map(|s| s.track.as_ref()).any(|t| t.ssrc == ssrc) {
                return ssrc;
            }
        }
    }

    /// Records the height the subscriber shows stream `stream_id` (an msid stream id it was offered)
    /// at, for that stream's video tracks; returns their keys (empty when it was offered no such video).
    pub fn set_preference(&mut self, stream_id: &str, max_height: u16) -> Vec<TrackKey> {
        let keys: Vec<TrackKey> = self
            .slots
            .iter()
            .zip(&self.sources)
            .filter_map(|(sl, so)| {
                let (t, s) = (sl.track.as_ref()?, so.as_ref()?);
                (t.kind == MediaKind::Video && t.stream_id == stream_id).then_some((s.transport, s.track))
            })
            .collect();
        for k in &keys {
            self.prefs.insert(*k, max_height);
        }
        keys
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
                wanted.insert((s.transport, s.track), Installed { video: t.kind == MediaKind::Video, out_ssrc: t.ssrc });
            }
        }
        let mut diff = SubscriptionDiff::default();
        for (k, i) in &wanted {
            if self.installed.get(k) != Some(i) {
                diff.add.push((*k, *i));
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
                v.push((SlotSource { owner: p.id.clone(), transport, track: t.id }, t.published.clone()));
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
            mid: format!("m{ssrc}"),
            kind,
            ssrc,
            rids: vec![],
            codec: Codec { pt: 96, name: "VP8".into(), clock_rate: 90000, channels: None, fmtp: None, rtcp_fb: vec![] },
            feedback: 0,
            stream_id: format!("s{}", ssrc / 100),
            track_id: format!("t{ssrc}"),
            cname: "c".into(),
        }
    }

    fn simulcast(mid: &str) -> PublishedTrack {
        PublishedTrack { mid: mid.into(), ssrc: 0, rids: vec!["q".into(), "h".into(), "f".into()], ..track(MediaKind::Video, 0) }
    }

    /// Participants 1..=n, each publishing on transport 10i an audio track (id 1, SSRC 100i) and a
    /// video track (id 2, SSRC 100i+1), and subscribing on transport 10i+1.
    fn room_with(n: u64) -> Room {
        let mut r = Room::default();
        for i in 1..=n {
            let mut p = Participant::new(format!("p{i}"), format!("n{i}"));
            p.publish = Some(i * 10);
            p.set_tracks(vec![track(MediaKind::Audio, i as u32 * 100), track(MediaKind::Video, i as u32 * 100 + 1)]);
            p.sub.transport = Some(i * 10 + 1);
            r.participants.insert(i, p);
        }
        r
    }

    const AUDIO: fn(u32) -> Installed = |out_ssrc| Installed { video: false, out_ssrc };
    const VIDEO: fn(u32) -> Installed = |out_ssrc| Installed { video: true, out_ssrc };

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
        assert_eq!(diff.add, vec![((20, 1), AUDIO(200)), ((20, 2), VIDEO(201)), ((30, 1), AUDIO(300)), ((30, 2), VIDEO(301))]);
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
        assert_eq!(diff.remove, vec![(20, 1), (20, 2)]);
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
        let src = |t| SlotSource { owner: "p9".into(), transport: t, track: 1 };
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
        p3.set_tracks(vec![track(MediaKind::Video, 301)]);
        r.participants.insert(3, p3);
        r.reconcile_all();
        let p1 = r.participants.get_mut(&1).unwrap();
        assert!(p1.sub.take_offer().is_none());
        p1.sub.accept_answer(1).unwrap();
        let (v, slots) = p1.sub.take_offer().unwrap();
        assert_eq!((v, slots.len()), (2, 3));
    }

    #[test]
    fn republishing_keeps_the_ids_of_unchanged_tracks() {
        let mut p = Participant::new("p1".into(), "n".into());
        let (added, gone) = p.set_tracks(vec![track(MediaKind::Audio, 100), simulcast("1")]);
        assert_eq!(added.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(gone.is_empty());
        // Same tracks plus a screen share: only the screen is new.
        let (added, gone) = p.set_tracks(vec![track(MediaKind::Audio, 100), simulcast("1"), track(MediaKind::Video, 105)]);
        assert_eq!(added.iter().map(|t| (t.id, t.published.ssrc)).collect::<Vec<_>>(), vec![(3, 105)]);
        assert!(gone.is_empty());
        // The screen goes, the camera changes its layers: both go, the camera comes back under a new id.
        let mut two = simulcast("1");
        two.rids.pop();
        let (added, gone) = p.set_tracks(vec![track(MediaKind::Audio, 100), two]);
        assert_eq!(added.iter().map(|t| t.id).collect::<Vec<_>>(), vec![4]);
        assert_eq!(gone, vec![2, 3]);
        assert_eq!(p.tracks.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 4]);
    }

    #[test]
    fn a_simulcast_track_reaches_each_subscriber_on_a_fresh_ssrc_of_its_own() {
        let mut r = room_with(3);
        r.participants.get_mut(&1).unwrap().set_tracks(vec![track(MediaKind::Audio, 100), simulcast("1")]);
        r.reconcile_all();
        let mut seen = Vec::new();
        for viewer in [2, 3] {
            let p = r.participants.get_mut(&viewer).unwrap();
            let (_, slots) = p.sub.take_offer().unwrap();
            let from_p1: Vec<_> = slots.iter().zip(&p.sub.sources).filter(|(_, so)| so.as_ref().unwrap().transport == 10).collect();
            let audio = from_p1[0].0.track.as_ref().unwrap();
            assert_eq!(audio.ssrc, 100, "a plain track keeps the publisher's SSRC");
            let video = from_p1[1].0.track.as_ref().unwrap();
            assert!(video.ssrc != 0 && video.rids.is_empty(), "{video:?}");
            let id = from_p1[1].1.as_ref().unwrap().track;
            assert_eq!(id, 3, "the camera changed: a new track id");
            let diff = p.sub.accept_answer(1).unwrap();
            assert!(diff.add.contains(&((10, 3), VIDEO(video.ssrc))), "{diff:?}");
            seen.push(video.ssrc);
            // A later offer keeps the slot's SSRC.
            p.sub.dirty = true;
            let (_, again) = p.sub.take_offer().unwrap();
            assert!(again.iter().any(|s| s.track.as_ref().is_some_and(|t| t.ssrc == video.ssrc)));
        }
        assert_ne!(seen[0], seen[1], "each subscriber has its own outgoing SSRC");
    }

    #[test]
    fn video_size_preferences_name_the_streams_video_tracks() {
        let mut r = room_with(2);
        r.reconcile_all();
        let p1 = r.participants.get_mut(&1).unwrap();
        assert_eq!(p1.sub.set_preference("s2", 360), vec![(20, 2)], "the video of p2's stream, not its audio");
        assert!(p1.sub.set_preference("s1", 360).is_empty(), "own stream: not offered");
        assert!(p1.sub.set_preference("nope", 360).is_empty());
        assert_eq!(p1.sub.prefs.get(&(20, 2)), Some(&360));
        // p2 leaves: the preference goes with the slot.
        r.participants.remove(&2);
        r.reconcile_all();
        assert!(r.participants[&1].sub.prefs.is_empty());
    }
}
