//! Closed-loop inference: observation + instruction → [`vla_core::Action`].
//!
//! A chunked model (`action.chunk_size` K > 1) predicts K actions per pass; the policy
//! executes them per *stream* (an environment, a robot), keeping each stream's chunks
//! between steps (see [`Policy::step`]): open loop, or temporally ensembled
//! ([`crate::config::ChunkExecution`]). A stream forgets them when its instruction changes
//! and when told an episode starts ([`Policy::reset_stream`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use image::imageops::{resize, FilterType};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};
use vla_core::{Action, Observation, RgbImage};

use crate::checkpoint::load_run;
use crate::config::ChunkExecution;
use crate::error::{Result, VlaError};
use crate::features::ActionSpace;
use crate::model::{left_pad, right_pad, GroundingReadout, SubtaskInput, VlaModel};
use crate::text_tokenizer::TextTokenizer;

/// `[3, H, W]` u8 tensor of an RGB image, resized (bilinear) to `size × size` if needed so
/// that inference sees what training saw. Data loaders should use this too.
pub fn image_to_tensor(img: &RgbImage, size: u32) -> Tensor {
    let resized;
    let img = if img.width() == size && img.height() == size {
        img
    } else {
        resized = resize(img, size, size, FilterType::Triangle);
        &resized
    };
    Tensor::from_slice(img.as_raw())
        .view([size as i64, size as i64, 3])
        .permute([2, 0, 1])
        .contiguous()
}

/// `[C, 3, S, S]` u8: the cameras in the policy's order, the layout `VlaBatch::images`
/// expects per sample.
pub fn observation_images<O: PolicyObservation + ?Sized>(obs: &O, size: u32) -> Tensor {
    let images: Vec<Tensor> = obs
        .images()
        .into_iter()
        .map(|img| image_to_tensor(img, size))
        .collect();
    Tensor::stack(&images, 0)
}

/// What a policy reads of one moment: its cameras' images, in the order of its features'
/// `cameras` (any size: each is resized to the model's input), and the state.
pub trait PolicyObservation {
    fn images(&self) -> Vec<&RgbImage>;
    fn state(&self) -> &[f32];
}

/// The simulator's observation: front and wrist cameras, the 13-number state.
impl PolicyObservation for Observation {
    fn images(&self) -> Vec<&RgbImage> {
        vec![&self.front, &self.wrist]
    }
    fn state(&self) -> &[f32] {
        &self.state
    }
}

/// Any robot's observation (`vla act --image … --state …`).
#[derive(Clone, Debug)]
pub struct RawObservation {
    pub images: Vec<RgbImage>,
    pub state: Vec<f32>,
}

impl PolicyObservation for RawObservation {
    fn images(&self) -> Vec<&RgbImage> {
        self.images.iter().collect()
    }
    fn state(&self) -> &[f32] {
        &self.state
    }
}

/// Where the grounding heads look, for `vla eval --trace`.
#[derive(Clone, Debug)]
pub struct HeadPoints {
    /// One table (x, y) per grounding head, in metres.
    pub heads: Vec<[f32; 2]>,
    /// The gate's probabilities (heads, then "hold"); empty without a gate. The token aims
    /// at their weighted target, so a split gate shows here, not in [`Self::subgoal`].
    pub subgoal_probs: Vec<f32>,
}

impl HeadPoints {
    /// The gate's choice: a head, or the number of heads for "hold" (`None` without a
    /// gate). The first of equal probabilities, as `argmax` picks.
    pub fn subgoal(&self) -> Option<usize> {
        self.subgoal_probs
            .iter()
            .enumerate()
            .fold(None, |best: Option<(usize, f32)>, (i, &p)| match best {
                Some((_, b)) if b >= p => best,
                _ => Some((i, p)),
            })
            .map(|(i, _)| i)
    }
}

/// What the policy decided for one observation.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The action to execute now and its token ids (temporal ensembling executes a mean
    /// that no tokens spell: the tokens are then the newest chunk's first action's).
    pub tokens: Vec<i64>,
    /// The end-effector action of a policy whose features' action space is the end-effector
    /// delta; a zero action (hold) for any other, whose numbers are in `values`.
    pub action: Action,
    /// The action's numbers in the features' `action_names` order, whatever the action space.
    pub values: Vec<f32>,
    /// The actions of the chunk this decision was read from, in order (one for the
    /// one-action head): what `vla act` shows of a chunked model.
    pub chunk: Vec<Action>,
    /// The sub-task it said first (`None` for a model without a plan).
    pub subtask: Option<String>,
    /// Where its grounding heads looked (`None` without heads).
    pub points: Option<HeadPoints>,
}

/// One decoded chunk that a stream is executing.
#[derive(Clone, Debug)]
struct HeldChunk {
    /// The decode's decision (its `chunk` is the K actions).
    decision: Decision,
    /// All K·action_dim token ids.
    tokens: Vec<i64>,
    /// Steps since it was decoded: which of its actions is meant for the current step.
    age: usize,
}

/// What a chunked model's policy keeps about one stream between steps.
#[derive(Debug, Default)]
struct Stream {
    /// The instruction its chunks were decoded for.
    instruction: String,
    /// Oldest first: one chunk in open loop, up to K for temporal ensembling.
    chunks: VecDeque<HeldChunk>,
}

/// A loaded model ready to act.
#[derive(Debug)]
pub struct Policy {
    model: VlaModel,
    tokenizer: TextTokenizer,
    /// Decoding temperature and the generator of its draws: `None` is greedy (the default).
    sampling: Option<(f64, Mutex<ChaCha8Rng>)>,
    /// Per stream, the chunks being executed (chunked models only).
    streams: Mutex<BTreeMap<usize, Stream>>,
}

/// Temporal ensembling's weights (ACT) of `n` predictions of one step, oldest first:
/// `exp(-m·i)` normalised to sum to 1, so with `m > 0` the oldest counts most.
pub fn ensemble_weights(n: usize, m: f64) -> Vec<f64> {
    let w: Vec<f64> = (0..n).map(|i| (-m * i as f64).exp()).collect();
    let sum: f64 = w.iter().sum();
    w.into_iter().map(|v| v / sum).collect()
}

/// The temporally ensembled action: the weighted mean of `predictions` of the current step
/// (oldest first, weights [`ensemble_weights`]); the binary gripper dimension closes when
/// the weighted share of predictions that close it is at least one half, so it stays a
/// command the gripper knows. `None` for no predictions.
pub fn ensemble_actions(predictions: &[Action], m: f64, gripper: Option<usize>) -> Option<Action> {
    if predictions.is_empty() {
        return None;
    }
    let weights = ensemble_weights(predictions.len(), m);
    let mut out = [0.0f32; vla_core::ACTION_DIM];
    for (d, value) in out.iter_mut().enumerate() {
        let mean: f64 = predictions
            .iter()
            .zip(&weights)
            .map(|(a, w)| f64::from(a.0[d]) * w)
            .sum();
        *value = if gripper == Some(d) {
            let closed: f64 = predictions
                .iter()
                .zip(&weights)
                .filter(|(a, _)| a.0[d] >= 0.5)
                .map(|(_, w)| w)
                .sum();
            if closed >= 0.5 {
                1.0
            } else {
                0.0
            }
        } else {
            mean as f32
        };
    }
    Some(Action(out))
}

impl Policy {
    /// Loads a run directory written by [`crate::checkpoint::save_run`].
    /// Loads a run for inference. On CUDA the activations are bf16, as in training there
    /// (`optim.bf16_on_cuda`): the weights stay f32 and are cast on use, so the checkpoint is
    /// the same; on the CPU everything stays f32.
    pub fn load(run_dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let (mut model, tokenizer) = load_run(run_dir, device)?;
        if matches!(device, Device::Cuda(_)) {
            model.set_compute_kind(tch::Kind::BFloat16)?;
        }
        Ok(Self::from_parts(model, tokenizer))
    }

    pub fn from_parts(model: VlaModel, tokenizer: TextTokenizer) -> Self {
        Policy {
            model,
            tokenizer,
            sampling: None,
            streams: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sample action tokens at `temperature` instead of taking the most likely (0). A greedy
    /// policy that sees the same image twice does the same thing twice, so a state where it
    /// commands no motion holds it for good; sampling can leave it. The draws come from a
    /// generator seeded with `seed`: the same seed and observations give the same actions.
    pub fn with_temperature(mut self, temperature: f64, seed: u64) -> Result<Self> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(VlaError::Input(format!(
                "temperature {temperature} must be a finite number >= 0"
            )));
        }
        self.sampling =
            (temperature > 0.0).then(|| (temperature, Mutex::new(ChaCha8Rng::seed_from_u64(seed))));
        Ok(self)
    }

    pub fn model(&self) -> &VlaModel {
        &self.model
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The model's greedy answer to a question about the front and wrist images (what
    /// co-training on vision-language data teaches; `vla ask`), at most `max_tokens` tokens.
    pub fn ask(
        &self,
        front: &RgbImage,
        wrist: &RgbImage,
        question: &str,
        max_tokens: usize,
    ) -> Result<String> {
        let size = self.model.config().vision.image_size as u32;
        let images = Tensor::stack(
            &[image_to_tensor(front, size), image_to_tensor(wrist, size)],
            0,
        )
        .unsqueeze(0);
        let (ids, mask) = crate::model::left_pad(
            &[self.tokenizer.encode_question(question)?],
            self.tokenizer.pad_id(),
        );
        let answers = self.model.answer(&images, None, &ids, &mask, max_tokens)?;
        let ids = answers.first().map(Vec::as_slice).unwrap_or_default();
        Ok(self.tokenizer.decode(ids)?.trim().to_string())
    }

    /// One control step of stream 0 (see [`Self::step`]): the action for this observation.
    pub fn act(&self, obs: &Observation, instruction: &str) -> Result<Action> {
        let mut actions = self.act_batch(&[(obs, instruction)])?;
        actions
            .pop()
            .ok_or_else(|| VlaError::Input("model returned no action".into()))
    }

    /// One control step of streams `0..n` for `n` (observation, instruction) pairs, in one
    /// batched forward pass (see [`Self::step`]).
    pub fn act_batch(&self, items: &[(&Observation, &str)]) -> Result<Vec<Action>> {
        let streams: Vec<usize> = (0..items.len()).collect();
        Ok(self
            .step(&streams, items)?
            .into_iter()
            .map(|d| d.action)
            .collect())
    }

    /// Forgets what every stream was executing (a new episode everywhere).
    pub fn reset(&self) {
        self.lock_streams().clear();
    }

    /// Forgets what `stream` was executing: call it where its episode starts, so no action
    /// planned for the last scene is executed in the next.
    pub fn reset_stream(&self, stream: usize) {
        self.lock_streams().remove(&stream);
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Stream>> {
        // A poisoned lock means a panic mid-step; what it held is still a valid state.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One control step for item `i` of stream `streams[i]` (distinct ids), the streams
    /// that need a decode batched in one pass. The one-action head decodes every item (as
    /// [`Self::decide`]). A chunked model executes per `action.chunk_execution`: open loop
    /// decodes a stream only when its chunk is used up (or missing: a new stream, a reset,
    /// another instruction) and otherwise returns the chunk's next action; temporal
    /// ensembling decodes every step and returns the weighted mean of what the last K
    /// chunks predicted for this step ([`ensemble_actions`]).
    pub fn step<O: PolicyObservation + ?Sized>(
        &self,
        streams: &[usize],
        items: &[(&O, &str)],
    ) -> Result<Vec<Decision>> {
        if streams.len() != items.len() {
            return Err(VlaError::Input(format!(
                "{} streams for {} observations",
                streams.len(),
                items.len()
            )));
        }
        let action = &self.model.config().action;
        let (k, a) = (action.chunk_size, action.action_dim);
        if k <= 1 {
            return self.decide(items, None);
        }
        if self.model.config().features.action_space != ActionSpace::EndEffectorDelta {
            return Err(VlaError::Input(format!(
                "chunked execution is built for end-effector actions; this policy's are {:?}",
                self.model.config().features.action_space
            )));
        }
        let distinct: std::collections::BTreeSet<usize> = streams.iter().copied().collect();
        if distinct.len() != streams.len() {
            return Err(VlaError::Input(format!(
                "a stream appears twice in one step: {streams:?}"
            )));
        }
        let mut held = self.lock_streams();
        let mut need = Vec::new();
        for (i, (&id, (_, instruction))) in streams.iter().zip(items).enumerate() {
            let stream = held.entry(id).or_default();
            if stream.instruction != *instruction {
                stream.chunks.clear();
                stream.instruction = instruction.to_string();
            }
            let used_up = stream.chunks.back().is_none_or(|c| c.age >= k);
            if action.chunk_execution == ChunkExecution::Ensemble || used_up {
                need.push(i);
            }
        }
        let subset: Vec<(&O, &str)> = need.iter().map(|&i| items[i]).collect();
        for (&i, (decision, tokens)) in need.iter().zip(self.decode(&subset, None)?) {
            let stream = held.entry(streams[i]).or_default();
            if action.chunk_execution == ChunkExecution::OpenLoop {
                stream.chunks.clear();
            }
            stream.chunks.push_back(HeldChunk {
                decision,
                tokens,
                age: 0,
            });
        }
        streams
            .iter()
            .map(|id| {
                let stream = held.entry(*id).or_default();
                stream.chunks.retain(|c| c.age < k);
                let newest = stream
                    .chunks
                    .back()
                    .ok_or_else(|| VlaError::Input("no chunk to execute".into()))?;
                let mut decision = newest.decision.clone();
                let at = newest.age;
                let pick = |c: &HeldChunk| c.decision.chunk.get(c.age).copied();
                decision.action = match action.chunk_execution {
                    ChunkExecution::OpenLoop => {
                        decision.tokens = newest
                            .tokens
                            .get(at * a..(at + 1) * a)
                            .map(<[i64]>::to_vec)
                            .unwrap_or_default();
                        pick(newest)
                    }
                    ChunkExecution::Ensemble => {
                        let predictions: Vec<Action> =
                            stream.chunks.iter().filter_map(pick).collect();
                        ensemble_actions(&predictions, action.ensemble_decay, action.gripper_dim)
                    }
                }
                .ok_or_else(|| VlaError::Input("a chunk shorter than action.chunk_size".into()))?;
                decision.values = decision.action.0.to_vec();
                for c in &mut stream.chunks {
                    c.age += 1;
                }
                Ok(decision)
            })
            .collect()
    }

    /// The model's inputs for a batch: images, states, prompt ids and mask (on its device).
    fn inputs<O: PolicyObservation + ?Sized>(
        &self,
        items: &[(&O, &str)],
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let cfg = self.model.config();
        let (cameras, state_dim) = (cfg.vision.num_cameras, cfg.action.state_dim);
        for (o, _) in items {
            let (c, s) = (o.images().len(), o.state().len());
            if c != cameras || s != state_dim {
                return Err(VlaError::Input(format!(
                    "an observation of {c} images and {s} state values; the policy reads \
                     {cameras} ({}) and {state_dim} ({})",
                    cfg.features.cameras.join(", "),
                    cfg.features.state_names.join(", ")
                )));
            }
        }
        let size = cfg.vision.image_size as u32;
        let images = Tensor::stack(
            &items
                .iter()
                .map(|(o, _)| observation_images(*o, size))
                .collect::<Vec<_>>(),
            0,
        );
        let states: Vec<f32> = items
            .iter()
            .flat_map(|(o, _)| o.state().iter().copied())
            .collect();
        let state = Tensor::from_slice(&states).view([items.len() as i64, state_dim as i64]);
        let prompts = items
            .iter()
            .map(|(_, instr)| self.tokenizer.encode_prompt(instr))
            .collect::<Result<Vec<_>>>()?;
        let (ids, mask) = left_pad(&prompts, self.tokenizer.pad_id());
        let device = self.model.device();
        Ok((
            images.to_device(device),
            state.to_device(device),
            ids.to_device(device),
            mask.to_device(device),
        ))
    }

    /// The grounding heads' heat maps `[C, H, h, w]` and coordinates `[C, H, 2]` for one
    /// observation (CPU, f32); `None` when the model has no grounding heads.
    pub fn grounding_maps<O: PolicyObservation + ?Sized>(
        &self,
        obs: &O,
        instruction: &str,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let (images, state, ids, mask) = self.inputs(&[(obs, instruction)])?;
        Ok(self
            .model
            .grounding_maps(&images, Some(&state), &ids, &mask)?
            .map(|(maps, coords)| {
                (
                    maps.select(0, 0).to_device(Device::Cpu),
                    coords.select(0, 0).to_device(Device::Cpu),
                )
            }))
    }

    /// Everything the policy decides for each item in one batched pass: action tokens,
    /// action, sub-task and where the grounding heads looked. `subtasks` imposes each
    /// item's sub-task instead of decoding it (a model with a plan; ignored without).
    /// Every call decodes, holding nothing between calls: of a chunk, the action (and
    /// tokens) is the first, and `chunk` has all K (closed-loop control goes through
    /// [`Self::step`]).
    pub fn decide<O: PolicyObservation + ?Sized>(
        &self,
        items: &[(&O, &str)],
        subtasks: Option<&[&str]>,
    ) -> Result<Vec<Decision>> {
        Ok(self
            .decode(items, subtasks)?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// [`Self::decide`] with each item's K·action_dim token ids.
    fn decode<O: PolicyObservation + ?Sized>(
        &self,
        items: &[(&O, &str)],
        subtasks: Option<&[&str]>,
    ) -> Result<Vec<(Decision, Vec<i64>)>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.model.config();
        let (images, state, ids, mask) = self.inputs(items)?;
        let forced = match subtasks {
            Some(s) if cfg.plan.enabled() => {
                if s.len() != items.len() {
                    return Err(VlaError::Input(format!(
                        "{} sub-tasks for {} observations",
                        s.len(),
                        items.len()
                    )));
                }
                let rows = s
                    .iter()
                    .map(|t| self.tokenizer.encode_subtask(t))
                    .collect::<Result<Vec<_>>>()?;
                let (ids, mask) = right_pad(&rows, self.tokenizer.pad_id());
                let device = self.model.device();
                Some((ids.to_device(device), mask.to_device(device)))
            }
            _ => None,
        };
        let subtask = match &forced {
            Some((ids, mask)) => SubtaskInput::Forced(ids, mask),
            None => SubtaskInput::Decode,
        };
        let generated = match &self.sampling {
            Some((t, rng)) => {
                // A poisoned lock only means another thread panicked mid-draw; the
                // generator's state is still a valid state.
                let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
                self.model.generate(
                    &images,
                    Some(&state),
                    &ids,
                    &mask,
                    subtask,
                    Some((*t, &mut rng)),
                )?
            }
            None => self
                .model
                .generate(&images, Some(&state), &ids, &mask, subtask, None)?,
        };
        let a = cfg.action.action_dim;
        let flat: Vec<i64> =
            Vec::<i64>::try_from(generated.actions.to_device(Device::Cpu).flatten(0, 1))?;
        let points = self.head_points(generated.grounding.as_ref(), items.len())?;
        flat.chunks(cfg.action.chunk_tokens())
            .zip(generated.subtasks)
            .zip(points)
            .map(|((row, subtask), points)| {
                let end_effector = cfg.features.action_space == ActionSpace::EndEffectorDelta;
                let decoded = row
                    .chunks(a)
                    .map(|tokens| {
                        let values = self.model.action_tokenizer().decode(tokens)?;
                        if !end_effector {
                            return Ok((Action::default(), values));
                        }
                        let action = Action::from_slice(&values)
                            .map_err(|e| VlaError::Input(e.to_string()))?;
                        action
                            .validate()
                            .map_err(|e| VlaError::Input(e.to_string()))?;
                        Ok((action, values))
                    })
                    .collect::<Result<Vec<(Action, Vec<f32>)>>>()?;
                let (action, values) = decoded
                    .first()
                    .cloned()
                    .ok_or_else(|| VlaError::Input("the model returned no action".into()))?;
                let chunk: Vec<Action> = decoded.into_iter().map(|(a, _)| a).collect();
                let subtask = match cfg.plan.enabled() {
                    true => Some(self.tokenizer.decode(&subtask)?.trim().to_string()),
                    false => None,
                };
                let decision = Decision {
                    tokens: row[..a.min(row.len())].to_vec(),
                    action,
                    values,
                    chunk,
                    subtask,
                    points,
                };
                Ok((decision, row.to_vec()))
            })
            .collect()
    }

    /// Each item's grounding heads' table positions and gate probabilities.
    fn head_points(
        &self,
        grounding: Option<&GroundingReadout>,
        n: usize,
    ) -> Result<Vec<Option<HeadPoints>>> {
        let probs: Vec<Vec<f32>> = match grounding.and_then(|g| g.subgoal_logits.as_ref()) {
            Some(logits) => {
                let classes = logits.size().get(1).copied().unwrap_or(0).max(1) as usize;
                let p = logits.softmax(-1, tch::Kind::Float).to_device(Device::Cpu);
                Vec::<f32>::try_from(p.flatten(0, -1))?
                    .chunks(classes)
                    .map(<[f32]>::to_vec)
                    .collect()
            }
            None => vec![Vec::new(); n],
        };
        Ok(
            match grounding.and_then(|g| self.model.table_targets_from(&g.coords)) {
                Some(table) => {
                    let heads = table.size().get(1).copied().unwrap_or(0).max(0) as usize;
                    let flat = Vec::<f32>::try_from(table.to_device(Device::Cpu).flatten(0, -1))?;
                    flat.chunks(heads * 2)
                        .zip(probs)
                        .map(|(row, subgoal_probs)| {
                            Some(HeadPoints {
                                heads: row.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
                                subgoal_probs,
                            })
                        })
                        .collect()
                }
                None => vec![None; n],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action_tokenizer::NormStats;
    use crate::config::VlaConfig;

    const INSTRUCTION: &str = "pick up the red cube";

    fn policy(k: usize, execution: ChunkExecution) -> Policy {
        crate::test_setup();
        let mut cfg = VlaConfig::test_tiny_chunk(k);
        cfg.action.chunk_execution = execution;
        let stats = NormStats::unit(&cfg);
        let model = VlaModel::new(cfg, stats, Device::Cpu, 9).expect("valid config");
        let tokenizer = TextTokenizer::train_for_instructions(
            &[INSTRUCTION, "put the green can in the blue bin"],
            300,
        )
        .expect("tokenizer");
        Policy::from_parts(model, tokenizer)
    }

    /// An observation whose images are one colour, set by `shade`.
    fn observation(shade: u8) -> Observation {
        let image = RgbImage::from_pixel(16, 16, image::Rgb([shade, 255 - shade, shade / 2]));
        Observation {
            front: image.clone(),
            wrist: image,
            front_depth: None,
            state: [0.1; vla_core::observation::STATE_DIM],
            instruction: INSTRUCTION.into(),
        }
    }

    fn chunk_of(policy: &Policy, obs: &Observation, instruction: &str) -> Vec<Action> {
        let mut d = policy.decide(&[(obs, instruction)], None).expect("decide");
        d.pop().expect("one decision").chunk
    }

    #[test]
    fn open_loop_executes_the_chunk_then_decodes_again() {
        let policy = policy(3, ChunkExecution::OpenLoop);
        let (a, b) = (observation(20), observation(220));
        let chunk_a = chunk_of(&policy, &a, INSTRUCTION);
        let chunk_b = chunk_of(&policy, &b, INSTRUCTION);
        assert_eq!(chunk_a.len(), 3);
        assert!(
            chunk_a[0] != chunk_a[1] && chunk_a[1] != chunk_a[2] && chunk_a[0] != chunk_a[2],
            "three slots, three actions: {chunk_a:?}"
        );
        assert_ne!(chunk_a, chunk_b, "the two scenes must differ for this test");
        // One decode on `a`, then its next two actions whatever is observed, then a decode
        // of what is observed then.
        let act = |obs: &Observation| policy.act(obs, INSTRUCTION).expect("act");
        assert_eq!(act(&a), chunk_a[0]);
        assert_eq!(act(&b), chunk_a[1]);
        assert_eq!(act(&b), chunk_a[2]);
        assert_eq!(act(&b), chunk_b[0]);
        assert_eq!(act(&a), chunk_b[1]);
        // The tokens are the executed action's.
        let step = policy
            .step(&[0], &[(&a, INSTRUCTION)])
            .expect("step")
            .pop()
            .expect("a decision");
        let own = policy
            .model()
            .action_tokenizer()
            .decode(&step.tokens)
            .expect("action tokens");
        assert_eq!(step.action.0.to_vec(), own);
        assert_eq!(step.action, chunk_b[2]);
        // A reset, or another instruction, drops the rest of the chunk.
        assert_eq!(act(&b), chunk_b[0]);
        policy.reset_stream(0);
        assert_eq!(act(&a), chunk_a[0]);
        let other = "put the green can in the blue bin";
        let fresh = chunk_of(&policy, &b, other);
        assert_eq!(policy.act(&b, other).expect("act"), fresh[0]);
        // Streams are independent: stream 1 starts its own chunk, stream 0 goes on.
        let both = policy
            .step(&[0, 1], &[(&b, other), (&a, INSTRUCTION)])
            .expect("step");
        assert_eq!(both[0].action, fresh[1]);
        assert_eq!(both[1].action, chunk_a[0]);
        assert!(policy
            .step(&[2, 2], &[(&a, INSTRUCTION), (&b, INSTRUCTION)])
            .is_err());
    }

    #[test]
    fn ensembling_weighs_the_chunks_that_predicted_this_step_oldest_first() {
        let w = ensemble_weights(3, 0.01);
        let raw = [1.0, (-0.01f64).exp(), (-0.02f64).exp()];
        let sum: f64 = raw.iter().sum();
        for (got, want) in w.iter().zip(raw) {
            assert!((got - want / sum).abs() < 1e-12, "{w:?}");
        }
        assert!(w[0] > w[1] && w[1] > w[2], "the oldest weighs most: {w:?}");
        assert_eq!(ensemble_weights(4, 0.0), vec![0.25; 4]);
        // Continuous dimensions are the weighted mean; the gripper the weighted majority.
        let act = |x: f32, g: f32| Action([x, 0.0, 0.0, 0.0, 0.0, 0.0, g]);
        let predictions = [act(0.3, 1.0), act(0.0, 0.0), act(0.0, 0.0)];
        let mean = ensemble_actions(&predictions, 0.01, Some(6)).expect("an action");
        assert!((mean.0[0] as f64 - 0.3 * w[0]).abs() < 1e-7, "{mean:?}");
        assert_eq!(mean.0[6], 0.0, "one of three closes: open");
        let trusting_the_oldest = ensemble_actions(&predictions, 5.0, Some(6)).expect("action");
        assert_eq!(
            trusting_the_oldest.0[6], 1.0,
            "the oldest outweighs the rest"
        );
        assert!(ensemble_actions(&[], 0.01, Some(6)).is_none());
        let one = act(0.123, 1.0);
        assert_eq!(ensemble_actions(&[one], 0.01, Some(6)), Some(one));

        // The policy: every step decodes; step 1 averages chunk 0's second action with
        // chunk 1's first, chunk 0 (the older) weighing more.
        let policy = policy(2, ChunkExecution::Ensemble);
        let (a, b) = (observation(20), observation(220));
        let (chunk_a, chunk_b) = (
            chunk_of(&policy, &a, INSTRUCTION),
            chunk_of(&policy, &b, INSTRUCTION),
        );
        let act = |obs: &Observation| policy.act(obs, INSTRUCTION).expect("act");
        assert_eq!(act(&a), chunk_a[0]);
        let expected = ensemble_actions(&[chunk_a[1], chunk_b[0]], 0.01, Some(6));
        assert_eq!(Some(act(&b)), expected);
        // Chunk a no longer predicts step 2: b's second action and b's first again.
        let expected = ensemble_actions(&[chunk_b[1], chunk_b[0]], 0.01, Some(6));
        assert_eq!(Some(act(&b)), expected);
    }

    #[test]
    fn the_one_action_policy_decodes_every_step() {
        let policy = policy(1, ChunkExecution::OpenLoop);
        let (a, b) = (observation(20), observation(220));
        for obs in [&a, &b, &a] {
            let fresh = chunk_of(&policy, obs, INSTRUCTION);
            assert_eq!(fresh.len(), 1);
            assert_eq!(policy.act(obs, INSTRUCTION).expect("act"), fresh[0]);
        }
    }
}
