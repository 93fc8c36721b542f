//! Vision-language examples for co-training (RT-2): question/answer pairs about rendered
//! scenes, held in memory as tensors like the robot frames, split by scene, turned into
//! [`TextBatch`]es whose answers the LM learns as text tokens.

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use crate::error::{Result, VlaError};
use crate::model::{left_pad, right_pad, TextBatch, VlaModel};
use crate::policy::image_to_tensor;
use crate::text_tokenizer::TextTokenizer;
use crate::train::data::{augment_images, AugmentConfig};

/// One question about one scene, as a vision-language dataset holds it.
#[derive(Clone, Debug)]
pub struct VqaExample {
    pub front: RgbImage,
    pub wrist: RgbImage,
    pub question: String,
    pub answer: String,
    /// The pair names a colour or a colour–object pair the robot data holds out.
    pub held_out: bool,
    /// Which scene of the dataset: examples of one scene share their images and their side
    /// of the validation split.
    pub scene: usize,
    /// A pointing question's answer as a place: where the object it names is in the front
    /// image, (x, y) in `[0, 1]`.
    pub point: Option<[f32; 2]>,
}

/// Vision-language examples, tokenised and decoded once.
pub struct VqaData {
    /// `[scenes, 2, 3, S, S]` u8, front then wrist.
    images: Tensor,
    /// Per example: its row of `images`.
    image_row: Vec<usize>,
    questions: Vec<Vec<i64>>,
    answers: Vec<Vec<i64>>,
    answer_text: Vec<String>,
    held_out: Vec<bool>,
    points: Vec<Option<[f32; 2]>>,
    train: Vec<usize>,
    val: Vec<usize>,
}

// SAFETY: as for `TrainingData`: the images tensor is written at load and only read after.
unsafe impl Sync for VqaData {}

impl std::fmt::Debug for VqaData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VqaData")
            .field("examples", &self.questions.len())
            .field("train", &self.train.len())
            .field("val", &self.val.len())
            .finish()
    }
}

impl VqaData {
    /// Tokenises the examples, resizes their images to `image_size` and holds out
    /// `val_fraction` of the scenes (seeded) for validation.
    pub fn from_examples(
        examples: &[VqaExample],
        image_size: u32,
        val_fraction: f64,
        seed: u64,
        tokenizer: &TextTokenizer,
    ) -> Result<Self> {
        if examples.is_empty() {
            return Err(VlaError::Input(
                "the vision-language data holds no examples".into(),
            ));
        }
        let mut scene_row = std::collections::BTreeMap::new();
        let mut rows = Vec::new();
        let mut image_row = Vec::with_capacity(examples.len());
        for e in examples {
            let next = rows.len();
            let row = *scene_row.entry(e.scene).or_insert(next);
            if row == next {
                rows.push(Tensor::stack(
                    &[
                        image_to_tensor(&e.front, image_size),
                        image_to_tensor(&e.wrist, image_size),
                    ],
                    0,
                ));
            }
            image_row.push(row);
        }
        let (train_scenes, val_scenes) =
            vla_datasets::split_episodes(rows.len(), val_fraction, seed);
        let val_scenes: std::collections::BTreeSet<usize> = val_scenes.into_iter().collect();
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (i, row) in image_row.iter().enumerate() {
            if val_scenes.contains(row) {
                val.push(i);
            } else {
                train.push(i);
            }
        }
        if train_scenes.is_empty() || train.is_empty() {
            return Err(VlaError::Input(
                "no vision-language scene left for training after the validation split".into(),
            ));
        }
        Ok(VqaData {
            images: Tensor::stack(&rows, 0),
            image_row,
            questions: examples
                .iter()
                .map(|e| tokenizer.encode_question(&e.question))
                .collect::<Result<_>>()?,
            answers: examples
                .iter()
                .map(|e| tokenizer.encode_subtask(&e.answer))
                .collect::<Result<_>>()?,
            answer_text: examples.iter().map(|e| normalise(&e.answer)).collect(),
            held_out: examples.iter().map(|e| e.held_out).collect(),
            points: examples.iter().map(|e| e.point).collect(),
            train,
            val,
        })
    }

    pub fn len(&self) -> usize {
        self.questions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    pub fn train_indices(&self) -> &[usize] {
        &self.train
    }

    pub fn val_indices(&self) -> &[usize] {
        &self.val
    }

    /// `n` training examples drawn with replacement from `rng`.
    pub fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        (0..n)
            .map(|_| self.train[rng.random_range(0..self.train.len())])
            .collect()
    }

    /// The batch of the given examples (images augmented when `augment` is given). Their
    /// state is left to the model's neutral one: a vision-language scene has no robot state.
    pub fn batch(
        &self,
        indices: &[usize],
        tokenizer: &TextTokenizer,
        augment: Option<(&AugmentConfig, &mut [ChaCha8Rng])>,
    ) -> TextBatch {
        let rows: Vec<i64> = indices.iter().map(|&i| self.image_row[i] as i64).collect();
        let images = self
            .images
            .index_select(0, &Tensor::from_slice(&rows).to_device(Device::Cpu));
        let images = match augment {
            Some((cfg, rngs)) => augment_images(&images, cfg, rngs),
            None => images,
        };
        let questions: Vec<Vec<i64>> = indices.iter().map(|&i| self.questions[i].clone()).collect();
        let answers: Vec<Vec<i64>> = indices.iter().map(|&i| self.answers[i].clone()).collect();
        let (prompt_ids, prompt_mask) = left_pad(&questions, tokenizer.pad_id());
        let (answer_ids, answer_mask) = right_pad(&answers, tokenizer.pad_id());
        TextBatch {
            images,
            state: None,
            prompt_ids,
            prompt_mask,
            answer_ids,
            answer_mask,
        }
    }

    /// `[B, heads, 2]` front-image targets and `[B, heads]` mask for the grounding heads'
    /// map loss: a pointing question teaches head 0 (which reads the first phrase, the
    /// object asked about) where that object is; other questions and heads are masked.
    pub fn pixels(&self, indices: &[usize], heads: usize) -> (Tensor, Tensor) {
        let mut xy = vec![0f32; indices.len() * heads * 2];
        let mut mask = vec![false; indices.len() * heads];
        for (row, &i) in indices.iter().enumerate() {
            if let (Some(p), true) = (self.points[i], heads > 0) {
                xy[row * heads * 2..row * heads * 2 + 2].copy_from_slice(&p);
                mask[row * heads] = true;
            }
        }
        let (b, h) = (indices.len() as i64, heads as i64);
        (
            Tensor::from_slice(&xy).view([b, h, 2]),
            Tensor::from_slice(&mask).view([b, h]),
        )
    }

    /// Exact-match accuracy of the model's greedy answers on `indices`, separately for the
    /// examples with only seen words and those with held-out ones: `(seen, held_out)` as
    /// (correct, total).
    pub fn accuracy(
        &self,
        model: &VlaModel,
        tokenizer: &TextTokenizer,
        indices: &[usize],
    ) -> Result<((usize, usize), (usize, usize))> {
        let max_tokens = self.answers.iter().map(Vec::len).max().unwrap_or(0) + 1;
        let (mut seen, mut held) = ((0, 0), (0, 0));
        for chunk in indices.chunks(64) {
            let batch = self.batch(chunk, tokenizer, None).to_device(model.device());
            let answers = model.answer(
                &batch.images,
                None,
                &batch.prompt_ids,
                &batch.prompt_mask,
                max_tokens,
            )?;
            for (&i, ids) in chunk.iter().zip(&answers) {
                let right = normalise(&tokenizer.decode(ids)?) == self.answer_text[i];
                let side = if self.held_out[i] {
                    &mut held
                } else {
                    &mut seen
                };
                side.0 += right as usize;
                side.1 += 1;
            }
        }
        Ok((seen, held))
    }
}

/// Answers compare without case, surrounding space or a final full stop.
pub fn normalise(answer: &str) -> String {
    answer.trim().trim_end_matches('.').trim().to_lowercase()
}
