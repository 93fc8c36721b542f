//! rosbag2 recordings (MCAP storage) to dataset frames: what `vla dataset from-mcap` reads.
//!
//! A bag is read twice, as a stream (never whole into memory):
//!
//! 1. [`plan_bag`] reads the times and the small messages of the named topics (joint states,
//!    twists, trajectories, arrays, episode markers) and checks every camera message's header
//!    without decoding its pixels. Everything that can be wrong with a bag is found here, before
//!    anything is written: a named topic missing (the error lists the bag's topics), a type we
//!    cannot read, a message that does not decode, a log time or header stamp that jumps back, a
//!    gap longer than `max_gap_s`, joint names that change, an unsupported image encoding, a raw
//!    image whose size changes.
//! 2. [`BagPlan::replay`] reads the bag again and decodes only the camera messages the frames
//!    take, handing out the frames in order (a compressed image's size is known only here, so
//!    a size change of one is reported from this pass).
//!
//! **Sampling** ([`sample`]): ticks at `fps` on the bag's log-time clock, from the first time
//! every named topic has a message (or the episode's start marker, if later) to the last message
//! of a named topic (or the stop marker). At each tick every topic contributes its latest message
//! at or before the tick; when that message is older than `tolerance_s`, the topic is stale and
//! the tick is dropped (counted per topic). Frames keep their order and are numbered without
//! gaps, so a dropped tick shortens the episode by one frame. A gap longer than `max_gap_s`
//! between two messages of a topic inside an episode (or from its last message to the episode's
//! end) is an error, as is a backwards jump of a topic's log time or header stamp: the importer
//! stops rather than guess (split the bag, or mark episodes around the gap with markers).
//!
//! **Episodes**: one per bag, or, with an episode topic (`std_msgs/msg/String`), one per
//! `start` … `stop` pair; `discard` drops the episode in progress, a `start` while one is in
//! progress ends it (kept) and starts the next, a `stop` or `discard` outside an episode is
//! ignored (counted), and an episode still open at the end of the bag ends with its last message.
//!
//! **Messages** (dispatched on the channel's schema name, `pkg/msg/Name` or `pkg/Name`; CDR
//! payloads through [`crate::msg`]): cameras from `sensor_msgs/Image` (the encodings of
//! [`crate::image::decode_raw`]) or `sensor_msgs/CompressedImage` (JPEG, PNG); the state and the
//! action from `sensor_msgs/JointState` (positions, named by the first message's joint names),
//! `geometry_msgs/TwistStamped` or `Twist` (linear x y z, angular x y z),
//! `trajectory_msgs/JointTrajectory` (the first point's positions) or
//! `std_msgs/Float64MultiArray` (`data`). Images keep their own size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use mcap::records::Record;
use mcap::sans_io::{LinearReadEvent, LinearReader, LinearReaderOptions};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use vla_core::RgbImage;

use crate::image::{decode_compressed, decode_raw, validate_compressed, validate_raw};
use crate::msg::{
    CompressedImage, Float64MultiArray, Header, Image, JointState, JointTrajectory, StringMsg,
    Twist, TwistStamped,
};

/// What to read from a bag and how to sample it.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Cameras as (name, topic); at least one.
    pub cameras: Vec<(String, String)>,
    /// Topic of the state vector.
    pub state_topic: String,
    /// Topic of the action vector.
    pub action_topic: String,
    /// Topic of `std_msgs/String` episode markers (`start`, `stop`, `discard`); `None`: one
    /// episode per bag.
    pub episode_topic: Option<String>,
    /// Frames per second.
    pub fps: u32,
    /// A topic whose latest message is older than this at a tick is stale (seconds).
    pub tolerance_s: f64,
    /// Longest silence of a topic inside an episode (seconds); longer is an error.
    pub max_gap_s: f64,
}

impl ImportOptions {
    /// The default tolerance: two frame periods.
    pub fn default_tolerance_s(fps: u32) -> f64 {
        2.0 / f64::from(fps.max(1))
    }

    /// Check the options; errors name the flag.
    pub fn validate(&self) -> Result<(), ImportError> {
        let bad = |s: String| Err(ImportError::Options(s));
        if self.fps == 0 {
            return bad("--fps must be at least 1".into());
        }
        if !(self.tolerance_s.is_finite() && self.tolerance_s > 0.0) {
            return bad(format!(
                "--tolerance must be a positive number of seconds, got {}",
                self.tolerance_s
            ));
        }
        if !(self.max_gap_s.is_finite() && self.max_gap_s > 0.0) {
            return bad(format!(
                "--max-gap must be a positive number of seconds, got {}",
                self.max_gap_s
            ));
        }
        if self.cameras.is_empty() {
            return bad("at least one --camera NAME=TOPIC is needed".into());
        }
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        for (i, (name, topic)) in self.cameras.iter().enumerate() {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return bad(format!(
                    "--camera {name}={topic}: a camera name is ASCII letters, digits, '_', '-' \
                     or '.'"
                ));
            }
            if self.cameras[..i].iter().any(|(n, _)| n == name) {
                return bad(format!("--camera {name}=… is given twice"));
            }
        }
        for (topic, flag) in self.uses() {
            if topic.is_empty() {
                return bad(format!("{flag} names an empty topic"));
            }
            if let Some(other) = seen.insert(topic, flag.clone()) {
                return bad(format!(
                    "{other} and {flag} name the same topic {topic}; each topic has one use"
                ));
            }
        }
        Ok(())
    }

    /// Every named topic with the flag that named it, in role order (cameras, state, action,
    /// episode markers).
    fn uses(&self) -> Vec<(&str, String)> {
        let mut out: Vec<(&str, String)> = self
            .cameras
            .iter()
            .map(|(name, topic)| (topic.as_str(), format!("--camera {name}={topic}")))
            .collect();
        out.push((&self.state_topic, format!("--state {}", self.state_topic)));
        out.push((
            &self.action_topic,
            format!("--action {}", self.action_topic),
        ));
        if let Some(t) = &self.episode_topic {
            out.push((t, format!("--episode-topic {t}")));
        }
        out
    }

    fn sampling(&self) -> Sampling {
        Sampling {
            fps: self.fps,
            tolerance_ns: (self.tolerance_s * 1e9).round() as u64,
            max_gap_ns: (self.max_gap_s * 1e9).round() as u64,
        }
    }
}

/// Why a bag cannot be imported. Every variant names the bag; most the topic.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Options(String),
    #[error("{}: {detail}", path.display())]
    Bag { path: PathBuf, detail: String },
    #[error("{}: topic {topic}: {detail}", path.display())]
    Topic {
        path: PathBuf,
        topic: String,
        detail: String,
    },
    #[error(
        "{}: {} not in the bag; it has {}",
        path.display(),
        missing.iter().map(|(t, flag)| format!("{t} ({flag})")).collect::<Vec<_>>().join(", "),
        list_topics(available)
    )]
    MissingTopics {
        path: PathBuf,
        /// (topic, the flag that named it)
        missing: Vec<(String, String)>,
        /// (topic, schema name) of every channel in the bag.
        available: Vec<(String, String)>,
    },
}

fn list_topics(available: &[(String, String)]) -> String {
    if available.is_empty() {
        return "no topics".into();
    }
    available
        .iter()
        .map(|(t, s)| format!("{t} ({s})"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// Sampling

/// How ticks are taken: `fps`, and the tolerance and longest gap in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    pub fps: u32,
    pub tolerance_ns: u64,
    pub max_gap_ns: u64,
}

/// The ticks of one episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampledEpisode {
    /// Log time of the first tick and the end of the episode (ns).
    pub start: u64,
    pub end: u64,
    /// The kept ticks: log time, and for every topic the index of the message it takes.
    pub ticks: Vec<(u64, Vec<usize>)>,
    /// Per topic: ticks dropped because the topic was stale.
    pub stale: Vec<usize>,
    /// Ticks dropped (a tick stale on two topics counts once here and in both `stale`).
    pub dropped: usize,
}

/// A topic silent for longer than the longest gap allowed, inside an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Index of the topic in the `times` given to [`sample`].
    pub topic: usize,
    /// Log time of the last message before the gap (ns).
    pub from: u64,
    /// Log time of the next message, or of the episode's end when `to_end` (ns).
    pub to: u64,
    pub to_end: bool,
}

/// Sample topics whose messages arrived at `times` (log times in ns, each sorted and
/// non-empty) within `interval` (ns, inclusive) (see the module docs). `Ok(None)`: no tick falls
/// in the interval once every topic has a message.
pub fn sample(
    times: &[&[u64]],
    interval: (u64, u64),
    s: Sampling,
) -> Result<Option<SampledEpisode>, Gap> {
    let Some(ready) = times
        .iter()
        .map(|t| t.first().copied())
        .collect::<Option<Vec<u64>>>()
        .and_then(|firsts| firsts.into_iter().max())
    else {
        return Ok(None);
    };
    let start = interval.0.max(ready);
    let end = interval.1;
    if start > end {
        return Ok(None);
    }
    // Silences inside the episode (the part of a silence before its start does not count).
    for (topic, ts) in times.iter().enumerate() {
        let first = ts.partition_point(|&t| t <= start).saturating_sub(1);
        let last = ts.partition_point(|&t| t <= end).max(first + 1);
        for pair in ts[first..last].windows(2) {
            if pair[1] - pair[0].max(start) > s.max_gap_ns {
                return Err(Gap {
                    topic,
                    from: pair[0],
                    to: pair[1],
                    to_end: false,
                });
            }
        }
        let latest = ts[last - 1];
        if end - latest.max(start) > s.max_gap_ns {
            return Err(Gap {
                topic,
                from: latest,
                to: end,
                to_end: true,
            });
        }
    }
    let mut episode = SampledEpisode {
        start,
        end,
        ticks: Vec::new(),
        stale: vec![0; times.len()],
        dropped: 0,
    };
    let mut at = vec![0usize; times.len()];
    let fps = u128::from(s.fps.max(1));
    for k in 0u128.. {
        let offset = k * 1_000_000_000 / fps;
        let Some(t) = u64::try_from(offset)
            .ok()
            .and_then(|o| start.checked_add(o))
            .filter(|&t| t <= end)
        else {
            break;
        };
        let mut stale = false;
        for (topic, ts) in times.iter().enumerate() {
            let p = &mut at[topic];
            while *p + 1 < ts.len() && ts[*p + 1] <= t {
                *p += 1;
            }
            if t - ts[*p] > s.tolerance_ns {
                episode.stale[topic] += 1;
                stale = true;
            }
        }
        if stale {
            episode.dropped += 1;
        } else {
            episode.ticks.push((t, at.clone()));
        }
    }
    Ok(Some(episode))
}

/// An episode marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Start,
    Stop,
    Discard,
}

impl Marker {
    /// `start`, `stop` or `discard` (any case, surrounding blanks ignored).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "start" => Some(Marker::Start),
            "stop" => Some(Marker::Stop),
            "discard" => Some(Marker::Discard),
            _ => None,
        }
    }
}

/// Episode intervals (ns, inclusive) from markers at log times (sorted), the bag's data ending
/// at `end_of_bag`; and how many markers were ignored (see the module docs).
pub fn marker_episodes(markers: &[(u64, Marker)], end_of_bag: u64) -> (Vec<(u64, u64)>, usize) {
    let mut out = Vec::new();
    let mut open: Option<u64> = None;
    let mut ignored = 0;
    for &(t, m) in markers {
        match (m, open) {
            (Marker::Start, Some(s)) => {
                out.push((s, t));
                open = Some(t);
            }
            (Marker::Start, None) => open = Some(t),
            (Marker::Stop, Some(s)) => {
                out.push((s, t));
                open = None;
            }
            (Marker::Discard, Some(_)) => open = None,
            (Marker::Stop | Marker::Discard, None) => ignored += 1,
        }
    }
    if let Some(s) = open {
        if s <= end_of_bag {
            out.push((s, end_of_bag));
        }
    }
    (out, ignored)
}

// ---------------------------------------------------------------------------------------
// Message types

/// The message types the importer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Image,
    CompressedImage,
    JointState,
    TwistStamped,
    Twist,
    JointTrajectory,
    Float64MultiArray,
    String,
}

impl Kind {
    /// From a schema name, `pkg/msg/Name` (ROS 2) or `pkg/Name`.
    fn of(schema: &str) -> Option<Self> {
        let mut parts = schema.split('/');
        let (pkg, name) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(p), Some("msg"), Some(n), None) | (Some(p), Some(n), None, None) => (p, n),
            _ => return None,
        };
        Some(match (pkg, name) {
            ("sensor_msgs", "Image") => Kind::Image,
            ("sensor_msgs", "CompressedImage") => Kind::CompressedImage,
            ("sensor_msgs", "JointState") => Kind::JointState,
            ("geometry_msgs", "TwistStamped") => Kind::TwistStamped,
            ("geometry_msgs", "Twist") => Kind::Twist,
            ("trajectory_msgs", "JointTrajectory") => Kind::JointTrajectory,
            ("std_msgs", "Float64MultiArray") => Kind::Float64MultiArray,
            ("std_msgs", "String") => Kind::String,
            _ => return None,
        })
    }

    fn is_image(self) -> bool {
        matches!(self, Kind::Image | Kind::CompressedImage)
    }

    fn is_vector(self) -> bool {
        matches!(
            self,
            Kind::JointState
                | Kind::TwistStamped
                | Kind::Twist
                | Kind::JointTrajectory
                | Kind::Float64MultiArray
        )
    }
}

const IMAGE_TYPES: &str = "sensor_msgs/msg/Image, sensor_msgs/msg/CompressedImage";
const VECTOR_TYPES: &str = "sensor_msgs/msg/JointState, geometry_msgs/msg/TwistStamped, \
    geometry_msgs/msg/Twist, trajectory_msgs/msg/JointTrajectory, std_msgs/msg/Float64MultiArray";

/// What a named topic is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Camera(usize),
    State,
    Action,
    Episode,
}

/// Parse a CDR payload with its 4-byte encapsulation header (plain CDR, either byte order).
fn decode_cdr<M: DeserializeOwned>(payload: &[u8]) -> Result<M, String> {
    use ros2_client::dds::rustdds::cdr_encoding::from_bytes;
    let (Some(head), Some(body)) = (payload.get(..4), payload.get(4..)) else {
        return Err(format!(
            "{} bytes, shorter than the 4-byte CDR header",
            payload.len()
        ));
    };
    let parsed = match (head[0], head[1]) {
        (0, 1) => from_bytes::<M, byteorder::LittleEndian>(body),
        (0, 0) => from_bytes::<M, byteorder::BigEndian>(body),
        (a, b) => {
            return Err(format!(
                "CDR representation {a:#04x}{b:02x} is not supported (plain CDR, 0x0000 or 0x0001)"
            ))
        }
    };
    parsed.map(|(m, _)| m).map_err(|e| e.to_string())
}

/// The header of a stamped message: the first field of every stamped type.
#[derive(Deserialize)]
struct Stamped {
    header: Header,
}

// ---------------------------------------------------------------------------------------
// Reading a bag

/// Stream every record of the MCAP file at `path` to `f`.
fn for_each_record(
    path: &Path,
    mut f: impl FnMut(Record<'_>) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let bag_err = |detail: String| ImportError::Bag {
        path: path.to_path_buf(),
        detail,
    };
    let mut file = File::open(path).map_err(|e| bag_err(format!("cannot open: {e}")))?;
    let mut reader = LinearReader::new_with_options(
        LinearReaderOptions::default()
            .with_validate_chunk_crcs(true)
            .with_record_length_limit(1 << 32),
    );
    while let Some(event) = reader.next_event() {
        let event = event.map_err(|e| {
            bag_err(format!(
                "not a readable MCAP file: {e} (an interrupted recording can be repaired with \
                 `mcap recover`)"
            ))
        })?;
        match event {
            LinearReadEvent::ReadRequest(need) => {
                let n = file
                    .read(reader.insert(need))
                    .map_err(|e| bag_err(format!("read error: {e}")))?;
                reader.notify_read(n);
            }
            LinearReadEvent::Record { opcode, data } => {
                let record = mcap::parse_record(opcode, data)
                    .map_err(|e| bag_err(format!("malformed MCAP record: {e}")))?;
                f(record)?;
            }
        }
    }
    Ok(())
}

/// Which named topic each channel carries, resolved as channels and schemas appear.
struct Channels<'a> {
    path: &'a Path,
    /// Named topic → role.
    roles: HashMap<String, Role>,
    schemas: HashMap<u16, String>,
    /// Channel id → (topic, schema name, message encoding).
    channels: HashMap<u16, (String, String, String)>,
    /// Channel id → role and kind, once its first message came (None: a topic not named).
    resolved: HashMap<u16, Option<(Role, Kind)>>,
}

impl<'a> Channels<'a> {
    fn new(path: &'a Path, opts: &ImportOptions) -> Self {
        let mut roles = HashMap::new();
        for (i, (_, topic)) in opts.cameras.iter().enumerate() {
            roles.insert(topic.clone(), Role::Camera(i));
        }
        roles.insert(opts.state_topic.clone(), Role::State);
        roles.insert(opts.action_topic.clone(), Role::Action);
        if let Some(t) = &opts.episode_topic {
            roles.insert(t.clone(), Role::Episode);
        }
        Channels {
            path,
            roles,
            schemas: HashMap::new(),
            channels: HashMap::new(),
            resolved: HashMap::new(),
        }
    }

    fn topic_err(&self, topic: &str, detail: String) -> ImportError {
        ImportError::Topic {
            path: self.path.to_path_buf(),
            topic: topic.to_string(),
            detail,
        }
    }

    /// Take in a schema or channel record; other records are ignored.
    fn record(&mut self, record: &Record<'_>) {
        match record {
            Record::Schema { header, .. } => {
                self.schemas.insert(header.id, header.name.clone());
            }
            Record::Channel(c) => {
                let schema = self.schemas.get(&c.schema_id).cloned().unwrap_or_default();
                self.channels
                    .insert(c.id, (c.topic.clone(), schema, c.message_encoding.clone()));
            }
            _ => {}
        }
    }

    /// The role and kind of a message's channel (`None` for topics not named); errors for a
    /// named topic of a type its role cannot read.
    fn resolve(&mut self, channel: u16) -> Result<Option<(Role, Kind, &str)>, ImportError> {
        if !self.resolved.contains_key(&channel) {
            let (topic, schema, encoding) =
                self.channels
                    .get(&channel)
                    .ok_or_else(|| ImportError::Bag {
                        path: self.path.to_path_buf(),
                        detail: format!(
                            "a message refers to channel {channel}, which is not defined"
                        ),
                    })?;
            let entry = match self.roles.get(topic) {
                None => None,
                Some(&role) => {
                    if encoding != "cdr" {
                        return Err(self.topic_err(
                            topic,
                            format!("message encoding {encoding:?} is not CDR (rosbag2's \"cdr\")"),
                        ));
                    }
                    let (wanted, ok): (&str, fn(Kind) -> bool) = match role {
                        Role::Camera(_) => (IMAGE_TYPES, Kind::is_image),
                        Role::State | Role::Action => (VECTOR_TYPES, Kind::is_vector),
                        Role::Episode => ("std_msgs/msg/String", |k| k == Kind::String),
                    };
                    match Kind::of(schema).filter(|&k| ok(k)) {
                        Some(kind) => Some((role, kind)),
                        None => {
                            let schema = if schema.is_empty() {
                                "no schema".to_string()
                            } else {
                                format!("type {schema}")
                            };
                            return Err(self.topic_err(
                                topic,
                                format!(
                                    "has {schema}, which cannot be read here (supported: {wanted})"
                                ),
                            ));
                        }
                    }
                }
            };
            self.resolved.insert(channel, entry);
        }
        Ok(match self.resolved.get(&channel) {
            Some(Some((role, kind))) => {
                let topic = self.channels.get(&channel).map_or("", |c| c.0.as_str());
                Some((*role, *kind, topic))
            }
            _ => None,
        })
    }

    /// (topic, schema) of every channel, sorted.
    fn available(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .channels
            .values()
            .map(|(t, s, _)| {
                (
                    t.clone(),
                    if s.is_empty() {
                        "no schema".into()
                    } else {
                        s.clone()
                    },
                )
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// What pass 1 keeps of one named topic.
#[derive(Default)]
struct Track {
    topic: String,
    kind: Option<Kind>,
    /// Log time of every message (non-decreasing: checked).
    times: Vec<u64>,
    /// Header stamp of the previous message (ns), for the backwards-jump check.
    last_stamp: Option<u128>,
    /// Vector topics: the values of every message, and their names (from the first message).
    values: Vec<Vec<f32>>,
    names: Vec<String>,
    /// Raw image topics: (width, height) of every message.
    sizes: Vec<(u32, u32)>,
    /// Episode topic: the markers.
    markers: Vec<(u64, Marker)>,
}

/// Where in a bag a time is, for messages: seconds since the bag's first message and the log
/// time itself.
fn when(t: u64, bag_start: u64) -> String {
    format!(
        "{:.3} s into the bag (log time {}.{:09})",
        t.saturating_sub(bag_start) as f64 / 1e9,
        t / 1_000_000_000,
        t % 1_000_000_000
    )
}

/// Joint names of a message (`name_i` where it gives none).
fn names_or(names: &[String], n: usize, prefix: &str) -> Vec<String> {
    if names.is_empty() {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    } else {
        names.to_vec()
    }
}

impl Track {
    /// Take in one message of this topic (pass 1). `n` counts from 1.
    fn message(
        &mut self,
        kind: Kind,
        log_time: u64,
        payload: &[u8],
        bag_start: u64,
    ) -> Result<(), String> {
        let n = self.times.len() + 1;
        let at = || format!("message {n}, {}", when(log_time, bag_start));
        if let Some(&prev) = self.times.last() {
            if log_time < prev {
                return Err(format!(
                    "log time jumps back by {:.3} s at {}",
                    (prev - log_time) as f64 / 1e9,
                    at()
                ));
            }
        }
        let undecodable = |e: String| format!("cannot decode {}: {e}", at());
        // The header stamp, for kinds that have one.
        let stamp = match kind {
            Kind::Twist | Kind::Float64MultiArray | Kind::String => None,
            _ => Some(
                decode_cdr::<Stamped>(payload)
                    .map_err(undecodable)?
                    .header
                    .stamp
                    .as_nanos(),
            ),
        };
        if let (Some(stamp), Some(prev)) = (stamp, self.last_stamp) {
            if stamp < prev {
                return Err(format!(
                    "header stamp jumps back by {:.3} s at {}",
                    (prev - stamp) as f64 / 1e9,
                    at()
                ));
            }
        }
        let vector: Option<(Vec<f64>, Vec<String>)> = match kind {
            Kind::Image => {
                let img: Image = decode_cdr(payload).map_err(undecodable)?;
                validate_raw(&img).map_err(|e| format!("{e} ({})", at()))?;
                self.sizes.push((img.width, img.height));
                None
            }
            Kind::CompressedImage => {
                let img: CompressedImage = decode_cdr(payload).map_err(undecodable)?;
                validate_compressed(&img).map_err(|e| format!("{e} ({})", at()))?;
                None
            }
            Kind::JointState => {
                let m: JointState = decode_cdr(payload).map_err(undecodable)?;
                if !m.name.is_empty() && m.name.len() != m.position.len() {
                    return Err(format!(
                        "{} joint names but {} positions at {}",
                        m.name.len(),
                        m.position.len(),
                        at()
                    ));
                }
                let names = names_or(&m.name, m.position.len(), "position_");
                Some((m.position, names))
            }
            Kind::TwistStamped | Kind::Twist => {
                let t = if kind == Kind::Twist {
                    decode_cdr::<Twist>(payload).map_err(undecodable)?
                } else {
                    decode_cdr::<TwistStamped>(payload)
                        .map_err(undecodable)?
                        .twist
                };
                let names = ["linear.x", "linear.y", "linear.z"]
                    .into_iter()
                    .chain(["angular.x", "angular.y", "angular.z"])
                    .map(String::from)
                    .collect();
                let v = t.linear.to_array().into_iter().chain(t.angular.to_array());
                Some((v.collect(), names))
            }
            Kind::JointTrajectory => {
                let m: JointTrajectory = decode_cdr(payload).map_err(undecodable)?;
                let point = m
                    .points
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("a trajectory without points at {}", at()))?;
                if !m.joint_names.is_empty() && m.joint_names.len() != point.positions.len() {
                    return Err(format!(
                        "{} joint names but {} positions in the first point at {}",
                        m.joint_names.len(),
                        point.positions.len(),
                        at()
                    ));
                }
                let names = names_or(&m.joint_names, point.positions.len(), "position_");
                Some((point.positions, names))
            }
            Kind::Float64MultiArray => {
                let m: Float64MultiArray = decode_cdr(payload).map_err(undecodable)?;
                let names = names_or(&[], m.data.len(), "data_");
                Some((m.data, names))
            }
            Kind::String => {
                let m: StringMsg = decode_cdr(payload).map_err(undecodable)?;
                let marker = Marker::parse(&m.data).ok_or_else(|| {
                    format!(
                        "marker {:?} at {} is not start, stop or discard",
                        m.data,
                        at()
                    )
                })?;
                self.markers.push((log_time, marker));
                None
            }
        };
        if let Some((values, names)) = vector {
            if self.values.is_empty() {
                self.names = names;
            } else if names != self.names {
                return Err(format!(
                    "the names change from [{}] to [{}] at {}",
                    self.names.join(", "),
                    names.join(", "),
                    at()
                ));
            }
            self.values
                .push(values.into_iter().map(|v| v as f32).collect());
        }
        self.kind = Some(kind);
        self.last_stamp = stamp.or(self.last_stamp);
        self.times.push(log_time);
        Ok(())
    }
}

/// A bag read once and sampled: the frames it will give (see the module docs).
pub struct BagPlan {
    path: PathBuf,
    opts: ImportOptions,
    /// Tracks in role order: cameras…, state, action.
    tracks: Vec<Track>,
    episodes: Vec<SampledEpisode>,
    empty_episodes: usize,
    /// Stale ticks (per topic, and in all) of the empty episodes.
    empty_stale: Vec<usize>,
    empty_dropped: usize,
    ignored_markers: usize,
    bag_start: u64,
}

/// Read a bag (pass 1) and plan its frames. Nothing is decoded beyond headers for cameras.
pub fn plan_bag(path: &Path, opts: &ImportOptions) -> Result<BagPlan, ImportError> {
    opts.validate()?;
    let ncam = opts.cameras.len();
    let (state, action, episode) = (ncam, ncam + 1, ncam + 2);
    let mut tracks: Vec<Track> = opts
        .uses()
        .into_iter()
        .map(|(topic, _)| Track {
            topic: topic.to_string(),
            ..Track::default()
        })
        .collect();
    let mut channels = Channels::new(path, opts);
    let mut bag_start: Option<u64> = None;
    for_each_record(path, |record| {
        channels.record(&record);
        let Record::Message { header, data } = record else {
            return Ok(());
        };
        let start = bag_start.map_or(header.log_time, |s| s.min(header.log_time));
        bag_start = Some(start);
        let Some((role, kind, topic)) = channels.resolve(header.channel_id)? else {
            return Ok(());
        };
        let index = match role {
            Role::Camera(i) => i,
            Role::State => state,
            Role::Action => action,
            Role::Episode => episode,
        };
        let topic = topic.to_string();
        tracks[index]
            .message(kind, header.log_time, &data, start)
            .map_err(|detail| channels.topic_err(&topic, detail))
    })?;
    let bag_start = bag_start.unwrap_or(0);

    // Every named topic must be there, with messages.
    let uses = opts.uses();
    let missing: Vec<(String, String)> = uses
        .iter()
        .filter(|(topic, _)| !channels.channels.values().any(|c| c.0 == *topic))
        .map(|(topic, flag)| (topic.to_string(), flag.clone()))
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::MissingTopics {
            path: path.to_path_buf(),
            missing,
            available: channels.available(),
        });
    }
    // The data topics (cameras, state, action) come before the episode markers.
    for t in &tracks[..episode] {
        if t.times.is_empty() {
            return Err(channels.topic_err(&t.topic, "the topic has no messages".into()));
        }
    }

    let end_of_bag = tracks[..episode]
        .iter()
        .filter_map(|t| t.times.last().copied())
        .max()
        .unwrap_or(0);
    let (intervals, ignored_markers) = match opts.episode_topic {
        Some(_) => marker_episodes(&tracks[episode].markers, end_of_bag),
        None => (vec![(0, end_of_bag)], 0),
    };
    let times: Vec<&[u64]> = tracks[..episode]
        .iter()
        .map(|t| t.times.as_slice())
        .collect();
    let sampling = opts.sampling();
    let mut episodes = Vec::new();
    let mut empty_episodes = 0;
    // Stale ticks of episodes that kept no frame still count in the report.
    let mut empty_stale = vec![0; times.len()];
    let mut empty_dropped = 0;
    for interval in intervals {
        match sample(&times, interval, sampling) {
            Ok(Some(e)) if !e.ticks.is_empty() => episodes.push(e),
            Ok(Some(e)) => {
                empty_episodes += 1;
                empty_dropped += e.dropped;
                for (sum, n) in empty_stale.iter_mut().zip(&e.stale) {
                    *sum += n;
                }
            }
            Ok(None) => empty_episodes += 1,
            Err(gap) => {
                let to = if gap.to_end {
                    format!("the end of the episode at {}", when(gap.to, bag_start))
                } else {
                    when(gap.to, bag_start)
                };
                return Err(channels.topic_err(
                    &tracks[gap.topic].topic,
                    format!(
                        "no message for {:.3} s, from {} to {to} (longer than --max-gap {} s)",
                        (gap.to - gap.from) as f64 / 1e9,
                        when(gap.from, bag_start),
                        opts.max_gap_s
                    ),
                ));
            }
        }
    }
    tracks.truncate(episode);
    let plan = BagPlan {
        path: path.to_path_buf(),
        opts: opts.clone(),
        tracks,
        episodes,
        empty_episodes,
        empty_stale,
        empty_dropped,
        ignored_markers,
        bag_start,
    };
    plan.check_frames()?;
    Ok(plan)
}

/// A frame as [`BagPlan::replay`] hands it out.
pub struct BagFrame<'a> {
    /// Episode of the bag (from 0) and frame within it (from 0).
    pub episode: usize,
    pub frame: usize,
    /// Log time of the tick (ns).
    pub time: u64,
    /// One image per camera, by camera name.
    pub images: &'a [(&'a str, &'a RgbImage)],
    pub state: &'a [f32],
    pub action: &'a [f32],
    /// Whether this is the episode's last frame.
    pub last_of_episode: bool,
}

impl BagPlan {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the state entries (the first message's joint names, …).
    pub fn state_names(&self) -> &[String] {
        &self.tracks[self.opts.cameras.len()].names
    }

    pub fn action_names(&self) -> &[String] {
        &self.tracks[self.opts.cameras.len() + 1].names
    }

    /// Episodes that will be written (each with at least one frame).
    pub fn episodes(&self) -> &[SampledEpisode] {
        &self.episodes
    }

    /// Episodes whose interval held no frame (markers around silence, all ticks stale).
    pub fn empty_episodes(&self) -> usize {
        self.empty_episodes
    }

    /// `stop` and `discard` markers outside an episode.
    pub fn ignored_markers(&self) -> usize {
        self.ignored_markers
    }

    pub fn frames(&self) -> usize {
        self.episodes.iter().map(|e| e.ticks.len()).sum()
    }

    /// Ticks dropped because a topic was stale, in total.
    pub fn dropped_ticks(&self) -> usize {
        self.empty_dropped + self.episodes.iter().map(|e| e.dropped).sum::<usize>()
    }

    /// Ticks dropped because of each topic (every topic listed, zeros included).
    pub fn stale_per_topic(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let n: usize = self.episodes.iter().map(|e| e.stale[i]).sum();
            out.insert(t.topic.clone(), n + self.empty_stale[i]);
        }
        out
    }

    /// Recorded time the episodes span (s).
    pub fn duration_s(&self) -> f64 {
        self.episodes
            .iter()
            .map(|e| (e.end - e.start) as f64 / 1e9)
            .sum()
    }

    fn topic_err(&self, track: usize, detail: String) -> ImportError {
        ImportError::Topic {
            path: self.path.clone(),
            topic: self.tracks[track].topic.clone(),
            detail,
        }
    }

    /// Where a frame is, for messages.
    fn frame_at(&self, episode: usize, frame: usize, track: usize, message: usize) -> String {
        let t = self.tracks[track].times.get(message).copied().unwrap_or(0);
        format!(
            "frame {frame} of episode {episode} (message {}, {})",
            message + 1,
            when(t, self.bag_start)
        )
    }

    /// Pass-1 checks of the frames: finite state and action values, raw images of one size.
    /// A camera's images keep the size of its first one; `at` is (episode, frame, camera,
    /// message) for the error.
    fn same_size(
        &self,
        size: &mut Option<(u32, u32)>,
        now: (u32, u32),
        (e, f, c, pick): (usize, usize, usize, usize),
    ) -> Result<(), ImportError> {
        match *size {
            None => *size = Some(now),
            Some(before) if before != now => {
                return Err(self.topic_err(
                    c,
                    format!(
                        "image size changes from {}x{} to {}x{} at {}",
                        before.0,
                        before.1,
                        now.0,
                        now.1,
                        self.frame_at(e, f, c, pick)
                    ),
                ))
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn check_frames(&self) -> Result<(), ImportError> {
        let ncam = self.opts.cameras.len();
        let mut sizes: Vec<Option<(u32, u32)>> = vec![None; ncam];
        for (e, episode) in self.episodes.iter().enumerate() {
            for (f, (_, picks)) in episode.ticks.iter().enumerate() {
                for (c, size) in sizes.iter_mut().enumerate() {
                    let Some(&now) = self.tracks[c].sizes.get(picks[c]) else {
                        continue; // compressed: checked when decoded
                    };
                    self.same_size(size, now, (e, f, c, picks[c]))?;
                }
                for track in [ncam, ncam + 1] {
                    let t = &self.tracks[track];
                    let values = &t.values[picks[track]];
                    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                        return Err(self.topic_err(
                            track,
                            format!(
                                "{} is {} at {}",
                                t.names.get(i).map_or("a value", String::as_str),
                                values[i],
                                self.frame_at(e, f, track, picks[track])
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Read the bag again and hand out every planned frame in order, camera images decoded
    /// (pass 2). Stops at the first error, of the bag or of `on_frame`.
    pub fn replay(
        &self,
        mut on_frame: impl FnMut(BagFrame<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let ncam = self.opts.cameras.len();
        let (state, action) = (ncam, ncam + 1);
        // (episode, frame) of every frame, in order.
        let order: Vec<(usize, usize)> = self
            .episodes
            .iter()
            .enumerate()
            .flat_map(|(e, ep)| (0..ep.ticks.len()).map(move |f| (e, f)))
            .collect();
        // What each frame takes: per topic the message's index.
        let picks: Vec<&[usize]> = order
            .iter()
            .map(|&(e, f)| self.episodes[e].ticks[f].1.as_slice())
            .collect();
        // The camera messages some frame takes.
        let mut wanted: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ncam];
        for p in &picks {
            for (c, set) in wanted.iter_mut().enumerate() {
                set.insert(p[c]);
            }
        }
        let mut decoded: Vec<HashMap<usize, RgbImage>> = vec![HashMap::new(); ncam];
        let mut seen = vec![0usize; ncam];
        let mut sizes: Vec<Option<(u32, u32)>> = vec![None; ncam];
        let mut next = 0usize;
        let mut channels = Channels::new(&self.path, &self.opts);
        let mut failure: Option<anyhow::Error> = None;
        let names: Vec<&str> = self.opts.cameras.iter().map(|(n, _)| n.as_str()).collect();

        let result = for_each_record(&self.path, |record| {
            channels.record(&record);
            let Record::Message { header, data } = record else {
                return Ok(());
            };
            let Some((Role::Camera(c), kind, _)) = channels.resolve(header.channel_id)? else {
                return Ok(());
            };
            let message = seen[c];
            seen[c] += 1;
            if !wanted[c].contains(&message) {
                return Ok(());
            }
            let img = match kind {
                Kind::Image => decode_cdr::<Image>(&data)
                    .and_then(|m| decode_raw(&m).map_err(|e| e.to_string())),
                _ => decode_cdr::<CompressedImage>(&data)
                    .and_then(|m| decode_compressed(&m).map_err(|e| e.to_string())),
            }
            .map_err(|e| {
                let t = self.tracks[c].times.get(message).copied().unwrap_or(0);
                self.topic_err(
                    c,
                    format!(
                        "cannot decode message {}, {}: {e}",
                        message + 1,
                        when(t, self.bag_start)
                    ),
                )
            })?;
            decoded[c].insert(message, img);
            // Hand out every frame whose images are all here.
            while next < order.len() {
                let p = picks[next];
                if (0..ncam).any(|c| !decoded[c].contains_key(&p[c])) {
                    break;
                }
                let (e, f) = order[next];
                let mut images: Vec<(&str, &RgbImage)> = Vec::with_capacity(ncam);
                for (c, size) in sizes.iter_mut().enumerate() {
                    let Some(img) = decoded[c].get(&p[c]) else {
                        break;
                    };
                    let now = img.dimensions();
                    self.same_size(size, now, (e, f, c, p[c]))?;
                    images.push((names[c], img));
                }
                let frame = BagFrame {
                    episode: e,
                    frame: f,
                    time: self.episodes[e].ticks[f].0,
                    images: &images,
                    state: &self.tracks[state].values[p[state]],
                    action: &self.tracks[action].values[p[action]],
                    last_of_episode: f + 1 == self.episodes[e].ticks.len(),
                };
                if let Err(err) = on_frame(frame) {
                    failure = Some(err);
                    return Err(ImportError::Bag {
                        path: self.path.clone(),
                        detail: "stopped".into(),
                    });
                }
                next += 1;
                // Keep only the images later frames take.
                if let Some(p) = picks.get(next) {
                    for (c, map) in decoded.iter_mut().enumerate() {
                        map.retain(|&m, _| m >= p[c]);
                    }
                }
            }
            Ok(())
        });
        if let Some(err) = failure {
            return Err(err);
        }
        result?;
        if next < order.len() {
            let (e, f) = order[next];
            return Err(ImportError::Bag {
                path: self.path.clone(),
                detail: format!(
                    "frame {f} of episode {e}: a camera message read in the first pass was \
                     not found in the second (was the file changed meanwhile?)"
                ),
            }
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
