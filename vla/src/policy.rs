//! Closed-loop inference: observation + instruction → [`vla_core::Action`].

use std::path::Path;
use std::sync::Mutex;

use image::imageops::{resize, FilterType};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};
use vla_core::{Action, Observation, RgbImage};

use crate::checkpoint::load_run;
use crate::error::{Result, VlaError};
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

/// `[2, 3, S, S]` u8: front then wrist camera, the layout `VlaBatch::images` expects per sample.
pub fn observation_images(obs: &Observation, size: u32) -> Tensor {
    Tensor::stack(
        &[
            image_to_tensor(&obs.front, size),
            image_to_tensor(&obs.wrist, size),
        ],
        0,
    )
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
    /// The generated action token ids and the action they decode to.
    pub tokens: Vec<i64>,
    pub action: Action,
    /// The sub-task it said first (`None` for a model without a plan).
    pub subtask: Option<String>,
    /// Where its grounding heads looked (`None` without heads).
    pub points: Option<HeadPoints>,
}

/// A loaded model ready to act.
#[derive(Debug)]
pub struct Policy {
    model: VlaModel,
    tokenizer: TextTokenizer,
    /// Decoding temperature and the generator of its draws: `None` is greedy (the default).
    sampling: Option<(f64, Mutex<ChaCha8Rng>)>,
}

impl Policy {
    /// Loads a run directory written by [`crate::checkpoint::save_run`].
    pub fn load(run_dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let (model, tokenizer) = load_run(run_dir, device)?;
        Ok(Self::from_parts(model, tokenizer))
    }

    pub fn from_parts(model: VlaModel, tokenizer: TextTokenizer) -> Self {
        Policy {
            model,
            tokenizer,
            sampling: None,
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

    /// One action for one observation.
    pub fn act(&self, obs: &Observation, instruction: &str) -> Result<Action> {
        let mut actions = self.act_batch(&[(obs, instruction)])?;
        actions
            .pop()
            .ok_or_else(|| VlaError::Input("model returned no action".into()))
    }

    /// Actions for several (observation, instruction) pairs in one batched forward pass.
    pub fn act_batch(&self, items: &[(&Observation, &str)]) -> Result<Vec<Action>> {
        Ok(self
            .decide(items, None)?
            .into_iter()
            .map(|d| d.action)
            .collect())
    }

    /// The model's inputs for a batch: images, states, prompt ids and mask (on its device).
    fn inputs(&self, items: &[(&Observation, &str)]) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let cfg = self.model.config();
        if cfg.vision.num_cameras != 2 {
            return Err(VlaError::Input(format!(
                "observations carry 2 cameras, the model expects {}",
                cfg.vision.num_cameras
            )));
        }
        let size = cfg.vision.image_size as u32;
        let images = Tensor::stack(
            &items
                .iter()
                .map(|(o, _)| observation_images(o, size))
                .collect::<Vec<_>>(),
            0,
        );
        let states: Vec<f32> = items.iter().flat_map(|(o, _)| o.state).collect();
        let state = Tensor::from_slice(&states)
            .view([items.len() as i64, vla_core::observation::STATE_DIM as i64]);
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
    pub fn grounding_maps(
        &self,
        obs: &Observation,
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
    pub fn decide(
        &self,
        items: &[(&Observation, &str)],
        subtasks: Option<&[&str]>,
    ) -> Result<Vec<Decision>> {
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
        flat.chunks(a)
            .zip(generated.subtasks)
            .zip(points)
            .map(|((row, subtask), points)| {
                let values = self.model.action_tokenizer().decode(row)?;
                let action =
                    Action::from_slice(&values).map_err(|e| VlaError::Input(e.to_string()))?;
                action
                    .validate()
                    .map_err(|e| VlaError::Input(e.to_string()))?;
                let subtask = match cfg.plan.enabled() {
                    true => Some(self.tokenizer.decode(&subtask)?.trim().to_string()),
                    false => None,
                };
                Ok(Decision {
                    tokens: row.to_vec(),
                    action,
                    subtask,
                    points,
                })
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
