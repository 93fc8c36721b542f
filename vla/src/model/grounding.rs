//! Language-conditioned spatial readout: "where, in each camera, is what the instruction names?"
//!
//! Each of `H` heads turns the pooled prompt embedding into a query over the conv stem's
//! channels; its dot product with every stem pixel is a heat map whose soft-argmax is the
//! (x, y) of the best match (a "red" query lights up red pixels). The coordinates of every head
//! in every camera go to the LM as one token. This is the inductive bias that CLIPort-style
//! pick-and-place models get from predicting pixel heat maps: the colour word selects image
//! locations directly, instead of the LM having to learn that lookup through attention from
//! a few hundred demonstrations (which, trained from scratch here, it did not).
//!
//! During training an auxiliary head (`target_head`) maps the front camera's coordinates to
//! the table position where the demonstration will grasp (head 0) and release (head 1); those
//! positions also go into the token. A heat-map loss asks each head's front-camera map to
//! peak where that point appears in the image (projected through the known camera; head 0's,
//! while the gripper is closed, is the gripper holding the object), so the readout is told
//! directly what to look for (see [`crate::train::data::TrainingData::target_pixels`]).
//! With `action.relative_targets` the token also carries those positions minus the end
//! effector's: the offset to the object or bin, which is what an expert's move is made of.
//! With `action.subgoal_weight` a gate (`subgoal`) reads the instruction and the
//! proprioception and says what the gripper is heading for now: one of the heads' targets,
//! or "hold" (lift what is grasped, `pick`'s last phase). The token then carries the gate's
//! probabilities and the one offset to that subgoal instead of one per head.
//!
//! A mean of the prompt's embeddings is a bag of words: "put the red can in the green bin"
//! and "put the green can in the red bin" pool alike, so a head cannot tell which colour is
//! the object's. With `vision.grounding_phrases` each head pools its own phrase instead: a
//! width-3 convolution gives every token its neighbours ("red" before "can" differs from
//! "red" before "bin") and a per-head softmax over the tokens picks the phrase the head
//! reads (see [`PhrasePooling`]).
//!
//! Parameter names: `grounding.query`, `grounding.phrase.conv.{weight,bias}`,
//! `grounding.phrase.attention`, `grounding.log_temperature.weight`, `grounding.projector.fc{1,2}`, `grounding.target_head.fc{1,2}`, `grounding.subgoal.fc{1,2}`.

use tch::nn::Path;
use tch::{Kind, Tensor};

use crate::config::VlaConfig;
use crate::model::layers::{lecun_init, Linear, DECAY_GROUP, NO_DECAY_GROUP};
use crate::model::projector::MlpProjector;

/// Per-head attention pooling over the prompt's tokens, each token seen with its neighbours.
#[derive(Debug)]
struct PhrasePooling {
    /// `grounding.phrase.conv` `[Dt, Dt, 3]`: token embeddings with their left and right
    /// neighbours, so a colour word carries the noun it qualifies.
    conv_weight: Tensor,
    conv_bias: Tensor,
    /// `grounding.phrase.attention`: one score per token and head.
    attention: Linear,
}

impl PhrasePooling {
    const WIDTH: i64 = 3;

    fn new(p: &Path, text: usize, heads: usize) -> Self {
        let p = p.sub("phrase");
        let conv = p.sub("conv");
        PhrasePooling {
            conv_weight: conv.set_group(DECAY_GROUP).var(
                "weight",
                &[text as i64, text as i64, Self::WIDTH],
                lecun_init(text * Self::WIDTH as usize),
            ),
            conv_bias: conv.set_group(NO_DECAY_GROUP).zeros("bias", &[text as i64]),
            attention: Linear::new(&p.sub("attention"), text, heads, true),
        }
    }

    /// `text [B, T, Dt]` prompt embeddings and `valid [B, T]` → `[B, H, Dt]`: each head's
    /// attention-weighted phrase feature, standardised like the mean pooling.
    fn pool(&self, text: &Tensor, valid: &Tensor) -> Tensor {
        let kind = text.kind();
        let w = valid.to_kind(kind).unsqueeze(-1);
        // Padding contributes nothing to its neighbours' features. `x` is [B, Dt, T],
        // `features` [B, T, Dt].
        let x = (text * &w).transpose(1, 2);
        let features = x
            .conv1d(
                &self.conv_weight.to_kind(kind),
                Some(&self.conv_bias.to_kind(kind)),
                [1],
                [Self::WIDTH / 2],
                [1],
                1,
            )
            .transpose(1, 2)
            .gelu("none");
        // [B, T, H]; a prompt without valid tokens would give NaN weights: zeros instead.
        let scores = self
            .attention
            .forward(&features)
            .to_kind(Kind::Float)
            .masked_fill(&valid.logical_not().unsqueeze(-1), f64::NEG_INFINITY);
        let weights = scores.softmax(1, Kind::Float).nan_to_num(0.0, 0.0, 0.0);
        let pooled = weights.transpose(1, 2).bmm(&features.to_kind(Kind::Float)); // [B, H, Dt]
        let d = pooled.size().last().copied().unwrap_or(1);
        pooled
            .layer_norm([d], None::<Tensor>, None::<Tensor>, 1e-5, false)
            .to_kind(kind)
    }
}

#[derive(Debug)]
pub struct Grounding {
    /// Pooled prompt embedding → `H` queries over the stem channels.
    query: Linear,
    /// Each head's own phrase instead of the one mean (`vision.grounding_phrases`).
    phrases: Option<PhrasePooling>,
    /// `grounding.log_temperature` `[H]`: learned sharpness of each heat map. A 1-pixel object
    /// among 256 stem pixels only moves the soft-argmax onto itself when its logit stands
    /// ~8 above the background; learning that through the query's scale alone was slow.
    log_temperature: Tensor,
    /// Coordinates of all heads in all cameras, and the table positions `target_head` reads
    /// from them → one LM token.
    projector: MlpProjector,
    /// Front-camera coordinates of all heads → table (x, y) per head, normalised like the
    /// end-effector state; used only by the auxiliary loss.
    target_head: MlpProjector,
    /// Pooled prompt embedding and proprioception → one logit per head and one for "hold":
    /// what the gripper is heading for now (`action.subgoal_weight > 0`).
    subgoal: Option<MlpProjector>,
    heads: i64,
    channels: i64,
    cameras: i64,
    /// The token also carries target − end effector (`action.relative_targets`).
    relative: bool,
}

impl Grounding {
    /// `None` unless `vision.grounding_heads > 0` (which validation ties to a conv stem).
    pub fn new(p: &Path, config: &VlaConfig) -> Option<Self> {
        let v = &config.vision;
        let heads = v.grounding_heads;
        // The maps read the last stem level, or (fine) the first with the last upsampled.
        let first = if v.grounding_fine {
            *v.stem_channels.first()?
        } else {
            0
        };
        let channels = first + *v.stem_channels.last()?;
        if heads == 0 {
            return None;
        }
        let text = config.text.hidden_size;
        let relative = config.action.relative_targets;
        let gated = config.action.subgoal_weight > 0.0;
        let offsets = match (relative, gated) {
            (false, _) => 0,
            (true, false) => 2 * heads,
            // The gate's probabilities and the offset to its subgoal.
            (true, true) => heads + 1 + 2,
        };
        let coords = 2 * heads * v.num_cameras + 2 * heads + offsets;
        Some(Grounding {
            query: Linear::new(&p.sub("query"), text, heads * channels, true),
            phrases: v
                .grounding_phrases
                .then(|| PhrasePooling::new(p, text, heads)),
            // Starts 4x sharper than a plain scaled dot product.
            log_temperature: p.sub("log_temperature").set_group(NO_DECAY_GROUP).var(
                "weight",
                &[heads as i64],
                tch::nn::Init::Const(4f64.ln()),
            ),
            projector: MlpProjector::new(&p.sub("projector"), coords, text, text),
            target_head: MlpProjector::new(&p.sub("target_head"), 2 * heads, 64, 2 * heads),
            subgoal: gated.then(|| {
                MlpProjector::new(
                    &p.sub("subgoal"),
                    text + config.action.proprio_width(),
                    64,
                    heads + 1,
                )
            }),
            heads: heads as i64,
            channels: channels as i64,
            cameras: v.num_cameras as i64,
            relative,
        })
    }

    pub fn heads(&self) -> i64 {
        self.heads
    }

    /// Each head's query over the stem channels, `[B, H, Cs]`: from the mean-pooled prompt
    /// `pooled [B, Dt]`, or with phrase pooling from the prompt embeddings `text [B, T, Dt]`
    /// and their mask `valid [B, T]` (head `h` reads its own phrase through its block of
    /// `query`).
    pub fn queries(&self, pooled: &Tensor, text: &Tensor, valid: &Tensor) -> Tensor {
        let b = pooled.size().first().copied().unwrap_or(0);
        let (h, ch) = (self.heads, self.channels);
        match &self.phrases {
            None => self.query.forward(pooled).view([b, h, ch]),
            Some(phrases) => {
                // [B, H, H*Cs]: every head's phrase through every head's block; keep the
                // diagonal (head h's phrase through head h's block).
                let all = self.query.forward(&phrases.pool(text, valid));
                all.view([b, h, h, ch])
                    .diagonal(0, 1, 2) // [B, Cs, H]
                    .transpose(1, 2)
                    .contiguous()
            }
        }
    }

    /// Each head's `queries [B, H, Cs]` and stem feature maps (`finest [B*C, Cs, h, w]`,
    /// then any `coarser` levels) → `[B*C, H, 2]` soft-argmax (x, y) in `[-1, 1]` per camera
    /// and head, and the heat maps themselves as log-probabilities `[B*C, H, h, w]` (both
    /// f32). A coarser level's dot products are upsampled (bilinearly), not its features:
    /// the same maps as upsampling the features, for `H` channels instead of its `Cs`.
    pub fn locate(
        &self,
        queries: &Tensor,
        finest: &Tensor,
        coarser: &[&Tensor],
    ) -> (Tensor, Tensor) {
        let (n, _, h, w) = finest.size4().unwrap_or((0, self.channels, 0, 0));
        let ch = self.channels;
        let b = n / self.cameras;
        let q = queries
            .view([b, 1, self.heads, ch])
            .expand([b, self.cameras, self.heads, ch], false)
            .reshape([n, self.heads, ch]);
        let scale = self
            .log_temperature
            .exp()
            .to_kind(q.kind())
            .view([1, self.heads, 1, 1])
            / (ch as f64).sqrt();
        let mut start = 0;
        let mut logits = Tensor::zeros([n, self.heads, h, w], (q.kind(), q.device()));
        for level in std::iter::once(finest).chain(coarser.iter().copied()) {
            let (_, cl, hl, wl) = level.size4().unwrap_or((n, 0, h, w));
            let part = q
                .narrow(2, start, cl)
                .bmm(&level.view([n, cl, hl * wl]))
                .view([n, self.heads, hl, wl]);
            start += cl;
            logits += if (hl, wl) == (h, w) {
                part
            } else {
                part.upsample_bilinear2d([h, w], false, None, None)
            };
        }
        let logits = (logits * scale).view([n, self.heads, h * w]); // [N, H, P]
        let coords = super::spatial_soft_argmax(&logits.transpose(1, 2), h, w);
        let maps = logits
            .to_kind(Kind::Float)
            .log_softmax(-1, Kind::Float)
            .view([n, self.heads, h, w]);
        (coords, maps)
    }

    /// Cross-entropy of one camera's heat maps (`log_maps [B*C, H, h, w]`; camera 0 is the
    /// front, 1 the wrist) against a Gaussian (σ = one stem pixel) around `pixels [B, H, 2]`
    /// ((x, y) in `[0, 1]` of the image), averaged over the heads where `mask [B, H]` is
    /// set. Teaches each head to look at where the demonstration's grasp or release point
    /// is in the image.
    pub fn map_loss(
        &self,
        log_maps: &Tensor,
        pixels: &Tensor,
        mask: &Tensor,
        camera: usize,
    ) -> Tensor {
        let (n, heads, h, w) = log_maps.size4().unwrap_or((0, self.heads, 1, 1));
        let b = n / self.cameras;
        let device = log_maps.device();
        let opts = (Kind::Float, device);
        let camera = (camera as i64).clamp(0, (self.cameras - 1).max(0));
        // [B, H, P]
        let maps = log_maps
            .view([b, self.cameras, heads, h * w])
            .select(1, camera);
        // Cell centres in stem-pixel units; targets scaled to the same units.
        let cx = (Tensor::arange(w, opts) + 0.5).view([1, 1, 1, w]);
        let cy = (Tensor::arange(h, opts) + 0.5).view([1, 1, h, 1]);
        let px = pixels.to_device(device).to_kind(Kind::Float);
        let tx = (px.select(2, 0) * w as f64).view([b, heads, 1, 1]);
        let ty = (px.select(2, 1) * h as f64).view([b, heads, 1, 1]);
        let d2 = (cx - tx).square() + (cy - ty).square(); // [B, H, h, w]
        let target = (d2 * -0.5).view([b, heads, h * w]).softmax(-1, Kind::Float);
        let ce = -(target * maps).sum_dim_intlist(-1, false, Kind::Float); // [B, H]
        let m = mask.to_device(device).to_kind(Kind::Float);
        (ce * &m).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0)
    }

    /// The subgoal gate's logits `[B, H + 1]` (f32; the last is "hold") from the
    /// `pooled [B, Dt]` prompt embedding and the normalised proprioception `[B, P]`; `None`
    /// without a gate.
    pub fn subgoal_logits(&self, pooled: &Tensor, proprio: &Tensor) -> Option<Tensor> {
        let gate = self.subgoal.as_ref()?;
        let input = Tensor::cat(
            &[pooled.to_kind(Kind::Float), proprio.to_kind(Kind::Float)],
            1,
        );
        Some(
            gate.forward(&input.to_kind(pooled.kind()))
                .to_kind(Kind::Float),
        )
    }

    /// `coords [B*C, H, 2]` → `[B, 1, D]` token. It carries the image coordinates and the
    /// table positions the target head reads from them, in the units of the normalised
    /// end-effector state. With relative targets, `ee_xy [B, 2]` is the normalised
    /// end-effector (x, y) and the token also carries each target minus it, so "where to go"
    /// relative to the gripper is an input, not a difference the LM must learn to compute.
    /// With the gate's logits `subgoal [B, H + 1]` it carries the gate's probabilities and
    /// the gate-weighted target minus the end effector instead ("hold" aims at head 0, the
    /// grasped object).
    pub fn token(
        &self,
        coords: &Tensor,
        ee_xy: Option<&Tensor>,
        subgoal: Option<&Tensor>,
        kind: Kind,
    ) -> Tensor {
        let n = coords.size().first().copied().unwrap_or(0);
        let b = n / self.cameras;
        let table = self.predict_targets(coords); // [B, H, 2]
        let mut parts = vec![
            coords.reshape([b, -1]).to_kind(Kind::Float),
            table.reshape([b, -1]),
        ];
        if self.relative {
            let aim = match &self.subgoal {
                Some(_) => {
                    let p = match subgoal {
                        Some(logits) => logits.to_kind(Kind::Float).softmax(-1, Kind::Float),
                        // Validation ties the gate to a state; without its logits, head 0.
                        None => {
                            let p =
                                Tensor::zeros([b, self.heads + 1], (Kind::Float, table.device()));
                            let _ = p.narrow(1, 0, 1).fill_(1.0);
                            p
                        }
                    };
                    parts.push(p.shallow_clone());
                    // "Hold" aims where head 0 looks.
                    let per_head = Tensor::cat(&[&table, &table.narrow(1, 0, 1)], 1);
                    (per_head * p.unsqueeze(-1)).sum_dim_intlist(1, true, Kind::Float)
                }
                None => table.shallow_clone(),
            };
            let offset = match ee_xy {
                Some(ee) => &aim - ee.to_kind(Kind::Float).view([b, 1, 2]),
                // Validation ties relative targets to a state; without one, no offset.
                None => aim.zeros_like(),
            };
            parts.push(offset.reshape([b, -1]));
        }
        let flat = Tensor::cat(&parts, 1);
        self.projector.forward(&flat.to_kind(kind)).unsqueeze(1)
    }

    /// `coords [B*C, H, 2]` → `[B, H, 2]` predicted table (x, y) of every head, normalised,
    /// from the front camera (camera 0), whose pose is fixed so pixels map to the table.
    pub fn predict_targets(&self, coords: &Tensor) -> Tensor {
        let n = coords.size().first().copied().unwrap_or(0);
        let b = n / self.cameras;
        let front = coords
            .view([b, self.cameras, self.heads * 2])
            .select(1, 0)
            .to_kind(Kind::Float);
        self.target_head
            .forward(&front)
            .to_kind(Kind::Float)
            .view([b, self.heads, 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    #[test]
    fn map_loss_prefers_maps_peaked_at_the_target_and_is_masked() {
        let cfg = VlaConfig::test_tiny();
        let vs = VarStore::new(Device::Cpu);
        let g = Grounding::new(&vs.root(), &cfg).expect("test_tiny has grounding heads");
        let (h, w) = (4i64, 4i64);
        // One sample, two cameras, two heads; the target of head 0 is the centre of the
        // cell in column 3, row 1 of the front camera.
        let pixels = Tensor::from_slice(&[3.5f32 / 4.0, 1.5 / 4.0, 0.5, 0.5]).view([1, 2, 2]);
        let head0 = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let loss_in = |logits: &Tensor, mask: &Tensor, camera: usize| {
            let log_maps = logits.view([2, 2, h * w]).log_softmax(-1, Kind::Float);
            g.map_loss(&log_maps.view([2, 2, h, w]), &pixels, mask, camera)
                .double_value(&[])
        };
        let loss = |logits: &Tensor, mask: &Tensor| loss_in(logits, mask, 0);
        let uniform = Tensor::zeros([2, 2, h, w], (Kind::Float, Device::Cpu));
        // Front camera, head 0: a Gaussian bump (σ = one cell) centred on cell (x, y).
        let bump = |x: f64, y: f64| {
            let opts = (Kind::Float, Device::Cpu);
            let cx = (Tensor::arange(w, opts) + 0.5).view([1, w]);
            let cy = (Tensor::arange(h, opts) + 0.5).view([h, 1]);
            let map = ((cx - x).square() + (cy - y).square()) * -0.5;
            let logits = uniform.copy();
            logits.get(0).get(0).copy_(&map);
            logits
        };
        let at_target = bump(3.5, 1.5);
        let elsewhere = bump(0.5, 3.5);
        let (u, t, e) = (
            loss(&uniform, &head0),
            loss(&at_target, &head0),
            loss(&elsewhere, &head0),
        );
        assert!(t < u && u < e, "at target {t}, uniform {u}, elsewhere {e}");
        // The wrist camera's maps do not count for the front loss, and the other way round;
        // a masked head costs nothing.
        let wrist_peak = uniform.copy();
        let _ = wrist_peak.get(1).get(0).get(0).get(0).fill_(6.0);
        assert!((loss(&wrist_peak, &head0) - u).abs() < 1e-9);
        assert!((loss_in(&at_target, &head0, 1) - u).abs() < 1e-9);
        let wrist_at_target = uniform.copy();
        wrist_at_target
            .get(1)
            .get(0)
            .copy_(&at_target.get(0).get(0));
        assert!((loss_in(&wrist_at_target, &head0, 1) - t).abs() < 1e-9);
        let none = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        assert_eq!(loss(&elsewhere, &none), 0.0);
    }

    #[test]
    fn upsampled_dot_products_equal_the_dot_product_with_upsampled_features() {
        crate::test_setup();
        let cfg = VlaConfig::test_tiny_fine_grounding();
        let vs = VarStore::new(Device::Cpu);
        let g = Grounding::new(&vs.root(), &cfg).expect("grounding heads");
        let opts = (Kind::Float, Device::Cpu);
        // One sample, two cameras: fine 4 channels at 8x8, coarse 8 channels at 4x4.
        let fine = crate::model::rng_locked(|| Tensor::randn([2, 4, 8, 8], opts));
        let coarse = crate::model::rng_locked(|| Tensor::randn([2, 8, 4, 4], opts));
        let d = cfg.text.hidden_size as i64;
        let pooled = crate::model::rng_locked(|| Tensor::randn([1, d], opts));
        let text = crate::model::rng_locked(|| Tensor::randn([1, 5, d], opts));
        let valid = Tensor::ones([1, 5], (Kind::Bool, Device::Cpu));
        let queries = g.queries(&pooled, &text, &valid);
        let (coords, maps) = g.locate(&queries, &fine, &[&coarse]);
        let up = coarse.upsample_bilinear2d([8, 8], false, None, None);
        let (coords_cat, maps_cat) = g.locate(&queries, &Tensor::cat(&[&fine, &up], 1), &[]);
        assert_eq!(maps.size(), [2, 2, 8, 8]);
        let diff = (maps - maps_cat).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "maps differ by {diff}");
        let diff = (coords - coords_cat).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "coordinates differ by {diff}");
    }

    /// The bag-of-words failure the phrases fix: swapping the object's and the bin's colour
    /// words leaves the mean-pooled queries unchanged, but not the phrase-pooled ones; and
    /// padding after the prompt changes neither.
    #[test]
    fn phrase_queries_tell_which_colour_goes_with_which_noun() {
        crate::test_setup();
        let mut cfg = VlaConfig::test_tiny();
        let d = cfg.text.hidden_size as i64;
        let opts = (Kind::Float, Device::Cpu);
        // "red can in green bin" and "green can in red bin" as four word embeddings.
        let words = crate::model::rng_locked(|| Tensor::randn([4, d], opts));
        let (red, can, green, bin) = (words.get(0), words.get(1), words.get(2), words.get(3));
        let first = Tensor::stack(&[&red, &can, &green, &bin], 0).unsqueeze(0);
        let swapped = Tensor::stack(&[&green, &can, &red, &bin], 0).unsqueeze(0);
        let valid = Tensor::ones([1, 4], (Kind::Bool, Device::Cpu));
        let mean = |t: &Tensor| t.mean_dim(1, false, Kind::Float);
        let differ = |g: &Grounding| {
            let a = g.queries(&mean(&first), &first, &valid);
            let b = g.queries(&mean(&swapped), &swapped, &valid);
            assert_eq!(a.size(), [1, g.heads(), g.channels]);
            (a - b).abs().max().double_value(&[])
        };

        let vs = VarStore::new(Device::Cpu);
        let bag = Grounding::new(&vs.root(), &cfg).expect("grounding heads");
        assert!(differ(&bag) < 1e-6, "a mean cannot see word order");

        cfg.vision.grounding_phrases = true;
        let vs = VarStore::new(Device::Cpu);
        let phrases = Grounding::new(&vs.root(), &cfg).expect("grounding heads");
        assert!(
            differ(&phrases) > 1e-3,
            "phrases see which colour precedes which noun"
        );

        // Two padding tokens after the prompt: the same queries.
        let pad = Tensor::zeros([1, 2, d], opts);
        let padded = Tensor::cat(&[&first, &pad], 1);
        let valid_padded = Tensor::cat(
            &[&valid, &Tensor::zeros([1, 2], (Kind::Bool, Device::Cpu))],
            1,
        );
        let a = phrases.queries(&mean(&first), &first, &valid);
        let b = phrases.queries(&mean(&first), &padded, &valid_padded);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "padding moved the queries by {diff}");
    }
}
