//! Instruction generation from the vocabulary and split data files.

use std::collections::BTreeMap;
use std::path::Path;

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vla_sim::ObjectKind;

use crate::TaskError;

pub const VOCABULARY_TOML: &str = include_str!("../data/vocabulary.toml");
pub const SPLITS_TOML: &str = include_str!("../data/splits.toml");

/// The kinds of step a sub-task sentence can name (`[subtasks]` of the vocabulary).
pub const SUBTASK_KINDS: &[&str] = &["pick", "place", "stack"];

/// Which instructions an episode may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Seen,
    Unseen,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Seen, Split::Unseen];

    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Seen => "seen",
            Split::Unseen => "unseen",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seen" => Ok(Split::Seen),
            "unseen" => Ok(Split::Unseen),
            other => Err(TaskError::UnknownSplit(other.to_string())),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vocabulary {
    pub colors: BTreeMap<String, [f32; 3]>,
    pub nouns: BTreeMap<String, Vec<String>>,
    pub templates: BTreeMap<String, Vec<String>>,
    /// One sentence per kind of step (`pick`, `place`, `stack`; see [`Language::subtask`]).
    pub subtasks: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOut {
    pub colors: Vec<String>,
    pub combos: Vec<String>,
    pub templates: BTreeMap<String, Vec<usize>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Splits {
    pub unseen: HeldOut,
}

/// Vocabulary plus splits: everything needed to phrase and classify instructions.
#[derive(Clone, Debug)]
pub struct Language {
    pub vocabulary: Vocabulary,
    pub splits: Splits,
}

/// What an instruction names: `object`, `base` as (colour, kind); `bin` as its colour.
#[derive(Clone, Copy, Debug, Default)]
pub struct Referents<'a> {
    pub object: Option<(&'a str, ObjectKind)>,
    pub base: Option<(&'a str, ObjectKind)>,
    pub bin: Option<&'a str>,
}

/// What the unseen split holds out in one episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Novelty {
    Color,
    Combo,
    Phrasing,
}

impl Novelty {
    /// The name evaluation reports tally success under.
    pub fn name(self) -> &'static str {
        match self {
            Novelty::Color => "color",
            Novelty::Combo => "combo",
            Novelty::Phrasing => "phrasing",
        }
    }
}

/// The placeholders a template of a family (or a sub-task sentence of a kind of step) fills:
/// exactly the referents its episodes have, so every instruction names what it is about.
fn placeholders_of(family: &str) -> &'static [&'static str] {
    match family {
        "pick" => &["object"],
        "place" => &["object", "bin"],
        "stack" => &["object", "base"],
        _ => &[],
    }
}

/// Every `{name}` in `text` must be one of `expected`, and each of those must appear.
fn check_placeholders(text: &str, expected: &[&str]) -> Result<(), String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("{text:?} has a '}}' without its '{{'"));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{text:?} has a '{{' without its '}}'"))?;
        let name = &after[..close];
        if !expected.contains(&name) {
            let allowed: Vec<String> = expected.iter().map(|p| format!("{{{p}}}")).collect();
            return Err(format!(
                "{text:?} uses the unknown placeholder {{{name}}}; allowed here: {}",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ));
        }
        found.push(name);
        rest = &after[close + 1..];
    }
    if let Some(missing) = expected.iter().find(|p| !found.contains(p)) {
        return Err(format!(
            "{text:?} does not name {{{missing}}}: an instruction must say what it is about"
        ));
    }
    Ok(())
}

impl Language {
    /// The vocabulary and splits shipped in `tasks/data/`.
    pub fn builtin() -> Result<Self, TaskError> {
        Self::from_strs(
            VOCABULARY_TOML,
            "tasks/data/vocabulary.toml",
            SPLITS_TOML,
            "tasks/data/splits.toml",
        )
    }

    pub fn from_files(vocabulary: &Path, splits: &Path) -> Result<Self, TaskError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| TaskError::Data {
                file: p.display().to_string(),
                cause: e.to_string(),
            })
        };
        Self::from_strs(
            &read(vocabulary)?,
            &vocabulary.display().to_string(),
            &read(splits)?,
            &splits.display().to_string(),
        )
    }

    pub fn from_strs(
        vocab: &str,
        vocab_name: &str,
        splits: &str,
        splits_name: &str,
    ) -> Result<Self, TaskError> {
        let vocabulary: Vocabulary = toml::from_str(vocab).map_err(|e| TaskError::Data {
            file: vocab_name.into(),
            cause: e.to_string(),
        })?;
        let splits: Splits = toml::from_str(splits).map_err(|e| TaskError::Data {
            file: splits_name.into(),
            cause: e.to_string(),
        })?;
        let lang = Language { vocabulary, splits };
        lang.validate(vocab_name, splits_name)?;
        Ok(lang)
    }

    fn validate(&self, vocab_name: &str, splits_name: &str) -> Result<(), TaskError> {
        let err = |file: &str, cause: String| TaskError::Data {
            file: file.into(),
            cause,
        };
        const NOUN_KINDS: [&str; 4] = ["cube", "cylinder", "ball", "bin"];
        for (name, rgb) in &self.vocabulary.colors {
            if rgb.iter().any(|v| !(0.0..=1.0).contains(v)) {
                return Err(err(
                    vocab_name,
                    format!("colors.{name} = {rgb:?}: each component must be in [0, 1]"),
                ));
            }
            if name.trim().is_empty() || name.contains(char::is_whitespace) {
                return Err(err(
                    vocab_name,
                    format!(
                        "colors: {name:?} must be one word (instructions say \"<colour> <noun>\")"
                    ),
                ));
            }
        }
        for (kind, nouns) in &self.vocabulary.nouns {
            if !NOUN_KINDS.contains(&kind.as_str()) {
                return Err(err(
                    vocab_name,
                    format!("nouns.{kind}: unknown kind; expected one of {NOUN_KINDS:?}"),
                ));
            }
            if let Some(n) = nouns.iter().find(|n| n.trim().is_empty()) {
                return Err(err(vocab_name, format!("nouns.{kind}: empty noun {n:?}")));
            }
        }
        for kind in NOUN_KINDS {
            if self.vocabulary.nouns.get(kind).is_none_or(|n| n.is_empty()) {
                return Err(err(vocab_name, format!("nouns.{kind} is missing or empty")));
            }
        }
        for kind in self.vocabulary.subtasks.keys() {
            if !SUBTASK_KINDS.contains(&kind.as_str()) {
                return Err(err(
                    vocab_name,
                    format!(
                        "subtasks.{kind}: unknown kind of step; expected one of {SUBTASK_KINDS:?}"
                    ),
                ));
            }
        }
        for kind in SUBTASK_KINDS {
            match self.vocabulary.subtasks.get(*kind) {
                Some(t) if !t.trim().is_empty() => {
                    check_placeholders(t, placeholders_of(kind))
                        .map_err(|cause| err(vocab_name, format!("subtasks.{kind}: {cause}")))?;
                }
                _ => {
                    return Err(err(
                        vocab_name,
                        format!("subtasks.{kind} is missing or empty"),
                    ))
                }
            }
        }
        for family in self.vocabulary.templates.keys() {
            if !crate::FAMILIES.contains(&family.as_str()) {
                return Err(err(
                    vocab_name,
                    format!(
                        "templates.{family}: unknown task family; expected one of {:?}",
                        crate::FAMILIES
                    ),
                ));
            }
        }
        for (family, templates) in &self.vocabulary.templates {
            for (i, t) in templates.iter().enumerate() {
                check_placeholders(t, placeholders_of(family)).map_err(|cause| {
                    err(vocab_name, format!("templates.{family}[{i}]: {cause}"))
                })?;
            }
        }
        for family in crate::FAMILIES {
            let n = self
                .vocabulary
                .templates
                .get(*family)
                .map(|t| t.len())
                .unwrap_or(0);
            if n == 0 {
                return Err(err(
                    vocab_name,
                    format!("templates.{family} is missing or empty"),
                ));
            }
            let held = self
                .splits
                .unseen
                .templates
                .get(*family)
                .cloned()
                .unwrap_or_default();
            if let Some(bad) = held.iter().find(|i| **i >= n) {
                return Err(err(
                    splits_name,
                    format!("unseen.templates.{family} index {bad} is out of range (0..{n})"),
                ));
            }
            if held.len() >= n {
                return Err(err(
                    splits_name,
                    format!("unseen.templates.{family} holds out every template"),
                ));
            }
        }
        for c in &self.splits.unseen.colors {
            if !self.vocabulary.colors.contains_key(c) {
                return Err(err(
                    splits_name,
                    format!(
                        "unseen.colors: {c:?} is not a colour of {vocab_name} (a vocabulary of \
                         your own needs a splits file that holds out its own colours)"
                    ),
                ));
            }
        }
        for combo in &self.splits.unseen.combos {
            let ok = combo.split_once(' ').is_some_and(|(c, k)| {
                self.vocabulary.colors.contains_key(c)
                    && ObjectKind::ALL.iter().any(|x| x.as_str() == k)
            });
            if !ok {
                return Err(err(
                    splits_name,
                    format!(
                        "unseen.combos: {combo:?} is not \"<colour of {vocab_name}> <cube|cylinder|ball>\""
                    ),
                ));
            }
        }
        if self.seen_colors().len() < 4 {
            return Err(err(
                splits_name,
                "the seen split needs at least 4 colours".into(),
            ));
        }
        Ok(())
    }

    pub fn rgb(&self, color: &str) -> [f32; 3] {
        self.vocabulary
            .colors
            .get(color)
            .copied()
            .unwrap_or([0.5, 0.5, 0.5])
    }

    pub fn seen_colors(&self) -> Vec<String> {
        self.vocabulary
            .colors
            .keys()
            .filter(|c| !self.splits.unseen.colors.contains(c))
            .cloned()
            .collect()
    }

    pub fn all_colors(&self) -> Vec<String> {
        self.vocabulary.colors.keys().cloned().collect()
    }

    pub fn is_held_out_combo(&self, color: &str, kind: ObjectKind) -> bool {
        self.splits
            .unseen
            .combos
            .iter()
            .any(|c| *c == format!("{color} {}", kind.as_str()))
    }

    /// A kind for a second object of `color`, other than `besides`, that makes no held-out
    /// pairing: two objects of one colour then still have names that tell them apart.
    pub fn draw_other_kind(
        &self,
        rng: &mut ChaCha8Rng,
        color: &str,
        besides: ObjectKind,
    ) -> Result<ObjectKind, TaskError> {
        let kinds: Vec<ObjectKind> = ObjectKind::ALL
            .into_iter()
            .filter(|k| *k != besides && !self.is_held_out_combo(color, *k))
            .collect();
        kinds.choose(rng).copied().ok_or_else(|| TaskError::Data {
            file: "splits.toml".into(),
            cause: format!(
                "unseen.combos holds out every {color} object but the {}, and a scene \
                     needs two {color} objects of different kinds",
                besides.as_str()
            ),
        })
    }

    /// Whether a (colour, kind) may appear anywhere in a seen episode.
    pub fn seen_allows(&self, color: &str, kind: ObjectKind) -> bool {
        !self.splits.unseen.colors.iter().any(|c| c == color)
            && !self.is_held_out_combo(color, kind)
    }

    fn templates(&self, family: &str) -> &[String] {
        self.vocabulary
            .templates
            .get(family)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// Template indices allowed for a split (unseen: held-out phrasings only when `held_out`).
    pub fn template_indices(&self, family: &str, held_out: bool) -> Vec<usize> {
        let held = self
            .splits
            .unseen
            .templates
            .get(family)
            .cloned()
            .unwrap_or_default();
        (0..self.templates(family).len())
            .filter(|i| held.contains(i) == held_out)
            .collect()
    }

    /// Pick which kind of novelty an unseen episode has (sort has no object to name).
    pub fn draw_novelty(&self, rng: &mut ChaCha8Rng, family: &str) -> Novelty {
        if family == "sort" {
            return if rng.random_bool(0.5) {
                Novelty::Color
            } else {
                Novelty::Phrasing
            };
        }
        match rng.random_range(0..3) {
            0 => Novelty::Color,
            1 => Novelty::Combo,
            _ => Novelty::Phrasing,
        }
    }

    /// Choose the target's colour for an episode of `split` with a given kind of novelty.
    pub fn draw_target(
        &self,
        rng: &mut ChaCha8Rng,
        split: Split,
        novelty: Option<Novelty>,
        kinds: &[ObjectKind],
    ) -> (String, ObjectKind) {
        let seen = self.seen_colors();
        loop {
            let (color, kind) = match (split, novelty) {
                (Split::Unseen, Some(Novelty::Color)) => {
                    let c = self
                        .splits
                        .unseen
                        .colors
                        .choose(rng)
                        .cloned()
                        .unwrap_or_else(|| seen[0].clone());
                    (c, *kinds.choose(rng).unwrap_or(&ObjectKind::Cube))
                }
                (Split::Unseen, Some(Novelty::Combo)) => {
                    let candidates: Vec<(String, ObjectKind)> = self
                        .splits
                        .unseen
                        .combos
                        .iter()
                        .filter_map(|combo| {
                            let (c, k) = combo.split_once(' ')?;
                            let kind = ObjectKind::ALL.into_iter().find(|x| x.as_str() == k)?;
                            kinds.contains(&kind).then(|| (c.to_string(), kind))
                        })
                        .collect();
                    match candidates.choose(rng) {
                        Some(c) => c.clone(),
                        None => (seen[0].clone(), kinds[0]),
                    }
                }
                _ => (
                    seen.choose(rng).cloned().unwrap_or_default(),
                    *kinds.choose(rng).unwrap_or(&ObjectKind::Cube),
                ),
            };
            let ok = match (split, novelty) {
                (Split::Seen, _) | (Split::Unseen, Some(Novelty::Phrasing)) => {
                    self.seen_allows(&color, kind)
                }
                _ => true,
            };
            if ok {
                return (color, kind);
            }
        }
    }

    /// A distractor's colour and kind, different from `taken`, and allowed in the split.
    pub fn draw_distractor(
        &self,
        rng: &mut ChaCha8Rng,
        split: Split,
        kinds: &[ObjectKind],
        taken: &[(String, ObjectKind)],
    ) -> (String, ObjectKind) {
        let colors = match split {
            Split::Seen => self.seen_colors(),
            Split::Unseen => self.all_colors(),
        };
        for _ in 0..1000 {
            let c = colors.choose(rng).cloned().unwrap_or_default();
            let k = *kinds.choose(rng).unwrap_or(&ObjectKind::Cube);
            if taken.iter().any(|(tc, tk)| *tc == c && *tk == k)
                || taken.iter().any(|(tc, _)| *tc == c)
            {
                continue;
            }
            if split == Split::Seen && !self.seen_allows(&c, k) {
                continue;
            }
            return (c, k);
        }
        (colors[0].clone(), kinds[0])
    }

    fn noun(&self, rng: &mut ChaCha8Rng, kind: &str) -> String {
        self.vocabulary
            .nouns
            .get(kind)
            .and_then(|n| n.choose(rng))
            .cloned()
            .unwrap_or_else(|| kind.to_string())
    }

    /// The sub-task sentence of a step of `kind` (`pick`, `place`, `stack`) with the canonical
    /// noun of each referent: one step, one sentence, whatever paraphrase the instruction used.
    pub fn subtask(&self, kind: &str, referents: Referents) -> String {
        let canonical = |k: &str| {
            self.vocabulary
                .nouns
                .get(k)
                .and_then(|n| n.first())
                .cloned()
                .unwrap_or_else(|| k.to_string())
        };
        let mut text = self
            .vocabulary
            .subtasks
            .get(kind)
            .cloned()
            .unwrap_or_default();
        if let Some((c, k)) = referents.object {
            text = text.replace("{object}", &format!("{c} {}", canonical(k.as_str())));
        }
        if let Some((c, k)) = referents.base {
            text = text.replace("{base}", &format!("{c} {}", canonical(k.as_str())));
        }
        if let Some(c) = referents.bin {
            text = text.replace("{bin}", &format!("{c} {}", canonical("bin")));
        }
        text
    }

    /// Fill a template of `family` with the episode's referents.
    pub fn phrase(
        &self,
        rng: &mut ChaCha8Rng,
        family: &str,
        split: Split,
        novelty: Option<Novelty>,
        referents: Referents,
    ) -> String {
        let Referents { object, base, bin } = referents;
        let held = split == Split::Unseen && novelty == Some(Novelty::Phrasing);
        let indices = self.template_indices(family, held);
        let index = indices.choose(rng).copied().unwrap_or(0);
        let template = self
            .templates(family)
            .get(index)
            .cloned()
            .unwrap_or_default();
        let mut text = template;
        if let Some((c, k)) = object {
            let noun = self.noun(rng, k.as_str());
            text = text.replace("{object}", &format!("{c} {noun}"));
        }
        if let Some((c, k)) = base {
            let noun = self.noun(rng, k.as_str());
            text = text.replace("{base}", &format!("{c} {noun}"));
        }
        if let Some(c) = bin {
            let noun = self.noun(rng, "bin");
            text = text.replace("{bin}", &format!("{c} {noun}"));
        }
        text
    }

    /// Every instruction and sub-task sentence the generator can produce (for tokenizer
    /// corpora).
    pub fn corpus(&self) -> Vec<String> {
        let mut out = Vec::new();
        let colors = self.all_colors();
        let templates = self.vocabulary.templates.values().flatten();
        for t in templates.chain(self.vocabulary.subtasks.values()) {
            for c in &colors {
                for (kind, nouns) in &self.vocabulary.nouns {
                    for n in nouns {
                        let filled = t
                            .replace("{object}", &format!("{c} {n}"))
                            .replace("{base}", &format!("{c} {n}"))
                            .replace(
                                "{bin}",
                                &format!("{c} {}", if kind == "bin" { n } else { "bin" }),
                            );
                        out.push(filled);
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
