//! Vision-language scenes for co-training (RT-2's recipe): random scenes with every colour
//! and object kind of the vocabulary — the unseen split's held-out colours and colour–object
//! pairs included, since this data is the only place they may appear — and question/answer
//! pairs read off the simulator state.
//!
//! [`VqaScene`] is a [`Task`], so `Env`/`VecEnv` build, settle and render its scenes like any
//! family's; [`Scene::from_env`] takes what the questions need from the settled cell and the
//! front camera; [`generate`] phrases the pairs with the templates of `data/vqa.toml`.

use std::collections::BTreeMap;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vla_core::{Action, CameraView};
use vla_sim::{
    Cell, Controller, Env, Evaluation, ObjectKind, ObjectSpec, ReceptacleSpec, SimError, Task,
};

use crate::{layout, Language, TaskError};

/// The built-in question templates.
pub const VQA_TOML: &str = include_str!("../data/vqa.toml");
const VQA_NAME: &str = "tasks/data/vqa.toml";

/// Share of objects that start inside a bin, so that "is X in Y" has yes answers.
pub const IN_BIN_SHARE: f64 = 0.3;

/// What a question asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QaKind {
    Colour,
    Object,
    Point,
    Count,
    Contains,
    Caption,
}

impl QaKind {
    pub const ALL: [QaKind; 6] = [
        QaKind::Colour,
        QaKind::Object,
        QaKind::Point,
        QaKind::Count,
        QaKind::Contains,
        QaKind::Caption,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            QaKind::Colour => "colour",
            QaKind::Object => "object",
            QaKind::Point => "point",
            QaKind::Count => "count",
            QaKind::Contains => "contains",
            QaKind::Caption => "caption",
        }
    }
}

/// One question about a scene and its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaPair {
    pub kind: QaKind,
    pub question: String,
    pub answer: String,
    /// Colour names and canonical nouns the pair involves.
    pub words: Vec<String>,
    /// Whether it involves a colour or colour–object pair the unseen split holds out.
    pub held_out: bool,
}

// ---------------------------------------------------------------------------------------
// Templates (data/vqa.toml)

/// Question templates per kind of question (see `data/vqa.toml` for the placeholders).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Questions {
    pub colour: Vec<String>,
    pub object: Vec<String>,
    pub point: Vec<String>,
    pub count_kind: Vec<String>,
    pub count_color: Vec<String>,
    pub contains: Vec<String>,
    pub bin_contents: Vec<String>,
    pub caption: Vec<String>,
}

/// The contents of `data/vqa.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    pub questions: Questions,
    /// Plurals the +s/+es rule gets wrong.
    #[serde(default)]
    pub plurals: BTreeMap<String, String>,
}

impl Templates {
    /// The templates shipped in `tasks/data/vqa.toml`.
    pub fn builtin() -> Result<Self, TaskError> {
        Self::parse(VQA_TOML, VQA_NAME)
    }

    /// Parse and check templates; errors name `file` and the key at fault.
    pub fn parse(text: &str, file: &str) -> Result<Self, TaskError> {
        let err = |cause: String| TaskError::Data {
            file: file.into(),
            cause,
        };
        let t: Templates = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        for (key, list, needs) in t.keyed() {
            if list.is_empty() {
                return Err(err(format!("questions.{key} is empty")));
            }
            for (i, template) in list.iter().enumerate() {
                let used = placeholders(template)
                    .map_err(|e| err(format!("questions.{key}[{i}] {template:?}: {e}")))?;
                if let Some(bad) = used.iter().find(|u| !needs.contains(&u.as_str())) {
                    return Err(err(format!(
                        "questions.{key}[{i}] {template:?}: unknown placeholder {{{bad}}} \
                         (this key takes {})",
                        shown(needs)
                    )));
                }
                if let Some(missing) = needs.iter().find(|n| !used.iter().any(|u| u == *n)) {
                    return Err(err(format!(
                        "questions.{key}[{i}] {template:?}: lacks {{{missing}}}"
                    )));
                }
            }
        }
        Ok(t)
    }

    /// Every template list with its key and the placeholders its templates must use.
    fn keyed(&self) -> [(&'static str, &[String], &'static [&'static str]); 8] {
        let q = &self.questions;
        [
            ("colour", &q.colour, &["noun"]),
            ("object", &q.object, &["color"]),
            ("point", &q.point, &["object"]),
            ("count_kind", &q.count_kind, &["nouns"]),
            ("count_color", &q.count_color, &["color"]),
            ("contains", &q.contains, &["object", "bin"]),
            ("bin_contents", &q.bin_contents, &["bin"]),
            ("caption", &q.caption, &[]),
        ]
    }

    fn plural(&self, noun: &str) -> String {
        if let Some(p) = self.plurals.get(noun) {
            return p.clone();
        }
        let es = ["s", "x", "z", "ch", "sh"]
            .iter()
            .any(|e| noun.ends_with(e));
        format!("{noun}{}", if es { "es" } else { "s" })
    }
}

fn shown(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `{name}` placeholders of a template, in order.
fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("unmatched '}'".into());
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("unmatched '{'")?;
        out.push(after[..close].to_string());
        rest = &after[close + 1..];
    }
    Ok(out)
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

// ---------------------------------------------------------------------------------------
// The scene family

/// A scene of 1–3 bins and 2–4 objects in any colour of the vocabulary, some objects inside
/// bins, the arm at home. No instruction, no expert: the scene is only looked at.
pub struct VqaScene {
    language: Language,
}

impl VqaScene {
    pub fn new(language: Language) -> Self {
        VqaScene { language }
    }
}

/// An object to be placed: colour, kind, and the bin it starts in (an index into the bins).
type Draft = (String, ObjectKind, Option<usize>);

/// Drop one thing after a failed layout: a free object while more than 2 objects remain,
/// else a bin (its object then stands free). False when nothing can go.
fn shrink(bins: &mut Vec<String>, objects: &mut Vec<Draft>) -> bool {
    if objects.len() > 2 {
        if let Some(i) = objects.iter().rposition(|o| o.2.is_none()) {
            objects.remove(i);
            return true;
        }
    }
    if bins.len() > 1 {
        let gone = bins.len() - 1;
        bins.pop();
        for o in objects.iter_mut().filter(|o| o.2 == Some(gone)) {
            o.2 = None;
        }
        return true;
    }
    false
}

impl Task for VqaScene {
    fn family(&self) -> &str {
        "vqa"
    }

    fn max_steps(&self) -> usize {
        1
    }

    fn reset(&mut self, cell: &mut Cell, rng: &mut ChaCha8Rng) -> Result<String, SimError> {
        let lang = &self.language;
        let colors = lang.all_colors();
        let n_bins = rng.random_range(1..=3usize).min(colors.len());
        let n_objects = rng.random_range(2..=4usize);
        let mut bins: Vec<String> = colors.choose_multiple(rng, n_bins).cloned().collect();
        let mut objects: Vec<Draft> = Vec::new();
        for _ in 0..n_objects {
            // Redraw exact duplicates (a few tries) so most objects can be named uniquely;
            // repeated colours stay, for counting.
            let mut draw = || {
                let c = colors.choose(rng).cloned().unwrap_or_default();
                let k = *ObjectKind::ALL.choose(rng).unwrap_or(&ObjectKind::Cube);
                (c, k)
            };
            let mut pick = draw();
            for _ in 0..10 {
                if !objects.iter().any(|o| o.0 == pick.0 && o.1 == pick.1) {
                    break;
                }
                pick = draw();
            }
            objects.push((pick.0, pick.1, None));
        }
        for i in 0..objects.len() {
            if rng.random_bool(IN_BIN_SHARE) {
                let free: Vec<usize> = (0..bins.len())
                    .filter(|b| !objects.iter().any(|o| o.2 == Some(*b)))
                    .collect();
                objects[i].2 = free.choose(rng).copied();
            }
        }
        let spec = |o: &Draft| ObjectSpec::new(o.1, &o.0, lang.rgb(&o.0));
        let spots = loop {
            let mut radii: Vec<f32> = bins
                .iter()
                .map(|c| ReceptacleSpec::bin(c, lang.rgb(c)).footprint_radius())
                .collect();
            radii.extend(
                objects
                    .iter()
                    .filter(|o| o.2.is_none())
                    .map(|o| spec(o).footprint_radius()),
            );
            match layout::place(rng, &radii) {
                Ok(spots) => break spots,
                Err(e) => {
                    if !shrink(&mut bins, &mut objects) {
                        return Err(SimError::InvalidInput(e.to_string()));
                    }
                }
            }
        };
        for (c, xy) in bins.iter().zip(&spots) {
            cell.add_receptacle(ReceptacleSpec::bin(c, lang.rgb(c)), xy[0], xy[1], 0.0);
        }
        let mut free_spots = spots[bins.len()..].iter();
        for o in &objects {
            let yaw = rng.random_range(-0.7f32..0.7);
            match o.2 {
                None => {
                    let Some(xy) = free_spots.next() else {
                        return Err(SimError::InvalidInput("layout lost a spot".into()));
                    };
                    cell.add_object(spec(o), xy[0], xy[1], yaw);
                }
                Some(b) => {
                    let centre = cell.receptacles[b].position;
                    let dx = rng.random_range(-0.015f32..0.015);
                    let dy = rng.random_range(-0.015f32..0.015);
                    let id = cell.add_object(spec(o), centre[0] + dx, centre[1] + dy, yaw);
                    // Above the bin's floor, not through it (it drops a few millimetres).
                    let body = cell.objects[id].body;
                    if let Some(b) = cell.world.bodies.get_mut(body) {
                        let mut t = b.translation();
                        t.z += 0.005;
                        b.set_translation(t, true);
                    }
                }
            }
        }
        Ok(String::new())
    }

    fn evaluate(&self, _cell: &Cell) -> Evaluation {
        Evaluation::from_success(false)
    }

    fn expert_action(&mut self, _cell: &Cell, _controller: &Controller) -> Action {
        Action::new([0.0; 3], [0.0; 3], 0.0)
    }
}

// ---------------------------------------------------------------------------------------
// What the questions see

/// One object or bin as the questions see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Thing {
    pub color: String,
    /// `None` for a bin.
    pub kind: Option<ObjectKind>,
    /// The point a pointing answer names: an object's centre, a bin's floor centre (m).
    pub centre: [f32; 3],
    /// Where `centre` appears in the front image, in [0, 1] (x right, y down).
    pub image_xy: Option<[f32; 2]>,
    /// Whether the front camera's ray to `centre` is clear of every other object and of the
    /// bin walls, so that the pixel there shows this thing.
    pub visible: bool,
    /// For an object: the bin it is in (`Cell::object_in_receptacle`), an index into
    /// [`Scene::bins`].
    pub in_bin: Option<usize>,
}

impl Thing {
    fn key(&self) -> &'static str {
        self.kind.map_or("bin", |k| k.as_str())
    }

    /// The pixel (column, row) of `centre` in an image of `width`×`height`, when it shows.
    pub fn pixel(&self, width: u32, height: u32) -> Option<[u32; 2]> {
        let [x, y] = self.image_xy?;
        let inside = (0.0..1.0).contains(&x) && (0.0..1.0).contains(&y);
        (self.visible && inside).then(|| {
            [
                ((x * width as f32) as u32).min(width.saturating_sub(1)),
                ((y * height as f32) as u32).min(height.saturating_sub(1)),
            ]
        })
    }
}

/// The objects and bins of a settled scene and the size of its stored images.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub objects: Vec<Thing>,
    pub bins: Vec<Thing>,
    pub width: u32,
    pub height: u32,
}

/// A vertical column that can hide what is behind it: centre (x, y), radius, z range.
struct Blocker {
    xy: [f32; 2],
    radius: f32,
    z: [f32; 2],
}

impl Scene {
    /// The scene of a reset environment, as its front camera sees it.
    pub fn from_env(env: &Env) -> Result<Scene, TaskError> {
        let cell = env.cell().ok_or_else(|| {
            TaskError::Sim(SimError::InvalidInput("no scene before reset".into()))
        })?;
        let [front, _] = env.camera_views()?;
        let r = &env.config.render;
        Ok(Scene::read(cell, &front, r.width, r.height))
    }

    /// Read objects, bins and containment off a cell; project through `front`.
    pub fn read(cell: &Cell, front: &CameraView, width: u32, height: u32) -> Scene {
        let blockers: Vec<Blocker> = cell
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let t = cell.object_pose(i).translation.vector;
                let h = o.spec.height * 0.5;
                Blocker {
                    xy: [t.x as f32, t.y as f32],
                    radius: o.spec.footprint_radius(),
                    z: [t.z as f32 - h, t.z as f32 + h],
                }
            })
            .collect();
        let clear = |to: [f32; 3], skip: Option<usize>| {
            const SAMPLES: usize = 200;
            (1..SAMPLES).all(|s| {
                let t = s as f32 / SAMPLES as f32;
                let p: [f32; 3] =
                    std::array::from_fn(|k| front.eye[k] + t * (to[k] - front.eye[k]));
                let in_object = blockers.iter().enumerate().any(|(j, b)| {
                    Some(j) != skip
                        && (p[0] - b.xy[0]).hypot(p[1] - b.xy[1]) < b.radius
                        && (b.z[0]..=b.z[1]).contains(&p[2])
                });
                let in_wall = cell.receptacles.iter().any(|r| {
                    let (s, c) = r.yaw.sin_cos();
                    let (dx, dy) = (p[0] - r.position[0], p[1] - r.position[1]);
                    let local = [(c * dx + s * dy).abs(), (-s * dx + c * dy).abs()];
                    let [ix, iy] = r.spec.inner_half;
                    let t = r.spec.wall_thickness;
                    let outer = local[0] <= ix + t && local[1] <= iy + t;
                    let inner = local[0] < ix && local[1] < iy;
                    outer && !inner && p[2] <= r.spec.wall_height
                });
                !in_object && !in_wall
            })
        };
        let objects = cell
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let t = cell.object_pose(i).translation.vector;
                let centre = [t.x as f32, t.y as f32, t.z as f32];
                Thing {
                    color: o.spec.color_name.clone(),
                    kind: Some(o.spec.kind),
                    centre,
                    image_xy: front.project(centre),
                    visible: clear(centre, Some(i)),
                    in_bin: (0..cell.receptacles.len()).find(|b| cell.object_in_receptacle(i, *b)),
                }
            })
            .collect();
        let bins = cell
            .receptacles
            .iter()
            .map(|r| {
                // The floor's top (`cell::receptacle_parts`: 4 mm thick).
                let centre = [r.position[0], r.position[1], 0.004];
                Thing {
                    color: r.spec.color_name.clone(),
                    kind: None,
                    centre,
                    image_xy: front.project(centre),
                    visible: clear(centre, None),
                    in_bin: None,
                }
            })
            .collect();
        Scene {
            objects,
            bins,
            width,
            height,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Questions and answers

/// Seeds of `n` scenes from a base seed (below 2^63, so they survive int64 columns).
pub fn scene_seeds(base: u64, n: usize) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(base ^ 0x7651_A5CE_5EED_0001);
    (0..n).map(|_| rng.random::<u64>() >> 1).collect()
}

/// The stream that phrases a scene's questions, separate from the one that built it.
pub fn question_rng(scene_seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(scene_seed ^ 0x0A5C_0F7E_0DE5_C0DE)
}

/// The question/answer pairs of a reset environment (deterministic given the seed).
pub fn pairs_for_env(
    env: &Env,
    language: &Language,
    templates: &Templates,
    scene_seed: u64,
    per_scene: usize,
) -> Result<Vec<QaPair>, TaskError> {
    let scene = Scene::from_env(env)?;
    let mut rng = question_rng(scene_seed);
    Ok(generate(&scene, language, templates, &mut rng, per_scene))
}

/// A candidate pair; `group` subdivides a kind so that rarer answers (a "yes") are drawn as
/// often as common ones.
struct Candidate {
    group: u8,
    pair: QaPair,
}

struct Phrasing<'a> {
    lang: &'a Language,
}

impl Phrasing<'_> {
    fn canonical(&self, key: &str) -> String {
        self.lang
            .vocabulary
            .nouns
            .get(key)
            .and_then(|n| n.first())
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }

    fn noun(&self, rng: &mut ChaCha8Rng, key: &str) -> String {
        self.lang
            .vocabulary
            .nouns
            .get(key)
            .and_then(|n| n.choose(rng))
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }

    fn color_held(&self, color: &str) -> bool {
        self.lang.splits.unseen.colors.iter().any(|c| c == color)
    }

    fn held(&self, t: &Thing) -> bool {
        match t.kind {
            Some(k) => !self.lang.seen_allows(&t.color, k),
            None => self.color_held(&t.color),
        }
    }

    /// "red cube" in canonical words, or with a random noun of the kind.
    fn name(&self, t: &Thing, rng: Option<&mut ChaCha8Rng>) -> String {
        let noun = match rng {
            Some(rng) => self.noun(rng, t.key()),
            None => self.canonical(t.key()),
        };
        format!("{} {noun}", t.color)
    }

    fn words(&self, things: &[&Thing]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in things {
            for w in [t.color.clone(), self.canonical(t.key())] {
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
        out
    }
}

fn template<'a>(rng: &mut ChaCha8Rng, list: &'a [String]) -> &'a str {
    list.choose(rng).map(String::as_str).unwrap_or_default()
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// "x", "x and y", "x, y and z".
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Up to `per_scene` pairs about `scene`, the kinds of question taken in turn (from a random
/// first one), each answer read off the scene.
pub fn generate(
    scene: &Scene,
    lang: &Language,
    templates: &Templates,
    rng: &mut ChaCha8Rng,
    per_scene: usize,
) -> Vec<QaPair> {
    let ph = Phrasing { lang };
    let q = &templates.questions;
    let mut by_kind: BTreeMap<QaKind, Vec<Candidate>> = BTreeMap::new();
    let mut add = |kind: QaKind,
                   group: u8,
                   question: String,
                   answer: String,
                   words: Vec<String>,
                   held: bool| {
        by_kind.entry(kind).or_default().push(Candidate {
            group,
            pair: QaPair {
                kind,
                question,
                answer,
                words,
                held_out: held,
            },
        });
    };
    let things: Vec<&Thing> = scene.objects.iter().chain(&scene.bins).collect();
    let unique = |t: &Thing| {
        things
            .iter()
            .filter(|o| o.key() == t.key() && o.color == t.color)
            .count()
            == 1
    };
    // Left to right in the front image.
    let mut ordered: Vec<&Thing> = scene.objects.iter().collect();
    ordered.sort_by(|a, b| {
        let x = |t: &Thing| t.image_xy.map_or(f32::INFINITY, |p| p[0]);
        x(a).total_cmp(&x(b))
    });

    // What colour is the <kind>? (the only one of its kind)
    for &t in &things {
        if things.iter().filter(|o| o.key() == t.key()).count() == 1 {
            let noun = ph.noun(rng, t.key());
            let question = fill(template(rng, &q.colour), &[("noun", &noun)]);
            add(
                QaKind::Colour,
                0,
                question,
                t.color.clone(),
                ph.words(&[t]),
                ph.held(t),
            );
        }
    }
    // What is the <colour> object? (the only object of its colour)
    for t in &scene.objects {
        if scene.objects.iter().filter(|o| o.color == t.color).count() == 1 {
            let question = fill(template(rng, &q.object), &[("color", &t.color)]);
            let answer = ph.canonical(t.key());
            add(
                QaKind::Object,
                0,
                question,
                answer,
                ph.words(&[t]),
                ph.held(t),
            );
        }
    }
    // Where is the <colour> <kind>? Bins only when empty, so the pixel shows the bin.
    let empty_bins = (scene.bins.iter().enumerate())
        .filter(|(b, _)| !scene.objects.iter().any(|o| o.in_bin == Some(*b)))
        .map(|(_, t)| t);
    for t in scene.objects.iter().chain(empty_bins) {
        let Some([x, y]) = t.pixel(scene.width, scene.height) else {
            continue;
        };
        if unique(t) {
            let name = ph.name(t, Some(&mut *rng));
            let question = fill(template(rng, &q.point), &[("object", &name)]);
            add(
                QaKind::Point,
                0,
                question,
                format!("{x} {y}"),
                ph.words(&[t]),
                ph.held(t),
            );
        }
    }
    // How many <kind>s? (every kind, absent ones too) How many <colour> objects?
    for key in ObjectKind::ALL.iter().map(|k| k.as_str()).chain(["bin"]) {
        let n = things.iter().filter(|t| t.key() == key).count();
        let noun = ph.noun(rng, key);
        let question = fill(
            template(rng, &q.count_kind),
            &[("nouns", &templates.plural(&noun))],
        );
        add(
            QaKind::Count,
            0,
            question,
            n.to_string(),
            vec![ph.canonical(key)],
            false,
        );
    }
    let mut colors: Vec<String> = Vec::new();
    for t in &scene.objects {
        if !colors.contains(&t.color) {
            colors.push(t.color.clone());
        }
    }
    let absent: Vec<String> = lang
        .all_colors()
        .into_iter()
        .filter(|c| !colors.contains(c))
        .collect();
    colors.extend(absent.choose(rng).cloned());
    for c in &colors {
        let n = scene.objects.iter().filter(|t| &t.color == c).count();
        let question = fill(template(rng, &q.count_color), &[("color", c)]);
        add(
            QaKind::Count,
            1,
            question,
            n.to_string(),
            vec![c.clone()],
            ph.color_held(c),
        );
    }
    // Is the <object> in the <bin>? What is in the <bin>?
    for (b, bin) in scene.bins.iter().enumerate() {
        if !unique(bin) {
            continue;
        }
        for t in scene.objects.iter().filter(|t| unique(t)) {
            let yes = t.in_bin == Some(b);
            let object = ph.name(t, Some(&mut *rng));
            let bin_name = ph.name(bin, Some(&mut *rng));
            let question = fill(
                template(rng, &q.contains),
                &[("object", &object), ("bin", &bin_name)],
            );
            let answer = if yes { "yes" } else { "no" };
            let held = ph.held(t) || ph.held(bin);
            add(
                QaKind::Contains,
                u8::from(!yes),
                question,
                answer.into(),
                ph.words(&[t, bin]),
                held,
            );
        }
        let inside: Vec<&Thing> = ordered
            .iter()
            .copied()
            .filter(|t| t.in_bin == Some(b))
            .collect();
        let answer = if inside.is_empty() {
            "nothing".to_string()
        } else {
            let names: Vec<String> = inside
                .iter()
                .map(|t| format!("the {}", ph.name(t, None)))
                .collect();
            list(&names)
        };
        let bin_name = ph.name(bin, Some(&mut *rng));
        let question = fill(template(rng, &q.bin_contents), &[("bin", &bin_name)]);
        let involved: Vec<&Thing> = std::iter::once(bin).chain(inside.iter().copied()).collect();
        let held = involved.iter().any(|t| ph.held(t));
        add(
            QaKind::Contains,
            2,
            question,
            answer,
            ph.words(&involved),
            held,
        );
    }
    // Describe the scene: objects left to right, then the bins.
    let describe = |t: &Thing| {
        let mut s = format!("{} {}", article(&t.color), ph.name(t, None));
        if let Some(bin) = t.in_bin.and_then(|b| scene.bins.get(b)) {
            s.push_str(&format!(" in the {}", ph.name(bin, None)));
        }
        s
    };
    let mut bins: Vec<&Thing> = scene.bins.iter().collect();
    bins.sort_by(|a, b| {
        let x = |t: &Thing| t.image_xy.map_or(f32::INFINITY, |p| p[0]);
        x(a).total_cmp(&x(b))
    });
    let objects: Vec<String> = ordered.iter().map(|t| describe(t)).collect();
    let bin_names: Vec<String> = bins.iter().map(|t| describe(t)).collect();
    let caption = match (objects.is_empty(), bin_names.is_empty()) {
        (false, false) => format!("{}; {}", list(&objects), list(&bin_names)),
        (false, true) => list(&objects),
        (true, _) => list(&bin_names),
    };
    let all: Vec<&Thing> = ordered.iter().chain(&bins).copied().collect();
    let held = all.iter().any(|t| ph.held(t));
    let question = template(rng, &q.caption).to_string();
    add(QaKind::Caption, 0, question, caption, ph.words(&all), held);

    select(by_kind, rng, per_scene)
}

/// Take `n` candidates, one kind after another from a random first kind; within a kind a
/// random group, then a random candidate of it; none twice.
fn select(
    mut by_kind: BTreeMap<QaKind, Vec<Candidate>>,
    rng: &mut ChaCha8Rng,
    n: usize,
) -> Vec<QaPair> {
    let kinds: Vec<QaKind> = by_kind.keys().copied().collect();
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let mut turn = rng.random_range(0..kinds.len());
    let mut misses = 0;
    while out.len() < n && misses < kinds.len() {
        let kind = kinds[turn % kinds.len()];
        turn += 1;
        let Some(pool) = by_kind.get_mut(&kind).filter(|p| !p.is_empty()) else {
            misses += 1;
            continue;
        };
        misses = 0;
        let mut groups: Vec<u8> = pool.iter().map(|c| c.group).collect();
        groups.sort_unstable();
        groups.dedup();
        let group = groups[rng.random_range(0..groups.len())];
        let members: Vec<usize> = (0..pool.len())
            .filter(|i| pool[*i].group == group)
            .collect();
        let pick = members[rng.random_range(0..members.len())];
        out.push(pool.remove(pick).pair);
    }
    out.shuffle(rng);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_templates_parse() {
        let t = Templates::builtin().unwrap();
        assert_eq!(t.plural("box"), "boxes");
        assert_eq!(t.plural("cube"), "cubes");
    }

    /// The questions teach what things are and where, never how an instruction is phrased:
    /// no verb that opens a robot instruction template (the unseen split's held-out ones
    /// included) is in a question.
    #[test]
    fn questions_use_no_instruction_verb() -> Result<(), TaskError> {
        let t = Templates::builtin()?;
        let lang = Language::builtin()?;
        let verbs: Vec<&str> = (lang.vocabulary.templates.values().flatten())
            .filter_map(|template| template.split_whitespace().next())
            .collect();
        assert!(
            verbs.contains(&"raise") && verbs.contains(&"take"),
            "{verbs:?}"
        );
        for (key, list, _) in t.keyed() {
            for question in list {
                let words: Vec<&str> = question
                    .split(|c: char| !c.is_alphabetic())
                    .filter(|w| !w.is_empty())
                    .collect();
                let used: Vec<&&str> = verbs.iter().filter(|v| words.contains(v)).collect();
                assert!(
                    used.is_empty(),
                    "questions.{key} {question:?} uses {used:?}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn bad_templates_name_the_file_and_the_key() {
        let good = VQA_TOML;
        let cases = [
            (
                good.replace("\"where is the {object}?\"", "\"where is the {thing}?\""),
                "questions.point[0]",
            ),
            (
                good.replace("\"describe the scene.\"", "\"describe the {color} scene.\""),
                "questions.caption[0]",
            ),
            (
                good.replace(
                    "\"is the {object} in the {bin}?\"",
                    "\"is the {object} in?\"",
                ),
                "questions.contains[0]",
            ),
            (
                good.replace("count_color = [", "count_colour = ["),
                "count_colour",
            ),
        ];
        for (text, key) in cases {
            let e = Templates::parse(&text, "my.toml").unwrap_err().to_string();
            assert!(e.contains("my.toml") && e.contains(key), "{e}");
        }
    }

    #[test]
    fn lists_read_as_english() {
        let s = |v: &[&str]| list(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["a"]), "a");
        assert_eq!(s(&["a", "b"]), "a and b");
        assert_eq!(s(&["a", "b", "c"]), "a, b and c");
        assert_eq!(placeholders("{a} x {b}").unwrap(), ["a", "b"]);
        assert!(placeholders("{a").is_err() && placeholders("a}").is_err());
    }
}
