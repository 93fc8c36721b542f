//! Gymnasium-style environments: `reset(seed) -> Observation`, `step(action) -> StepResult`,
//! and a vector of environments stepped in parallel threads with one batched render pass.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vla_core::{Action, Observation, RgbImage};
use vla_render::{CameraView, Lighting, RenderConfig, Renderer, SceneId};

use crate::cell::Cell;
use crate::config::SimConfig;
use crate::controller::{ActionReport, ControlMode, Controller, InterventionCounts};
use crate::error::SimError;
use crate::randomization::Randomization;
use crate::visual::{scene_bodies, scene_poses, CameraConfig, PoseSource};
use vla_kinematics::RobotDescription;

/// Success and reward of the current state, judged from physical state only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub success: bool,
    pub reward: f32,
}

impl Evaluation {
    /// Sparse reward: 1 on success.
    pub fn from_success(success: bool) -> Self {
        Evaluation {
            success,
            reward: if success { 1.0 } else { 0.0 },
        }
    }
}

/// A task family instance: builds the scene, judges success, and scripts an expert.
/// Implemented by the task suite (`vla-tasks`); the simulator only drives it.
pub trait Task: Send {
    /// Family name, e.g. "pick".
    fn family(&self) -> &str;
    /// Episode step limit (truncation).
    fn max_steps(&self) -> usize;
    /// Populate an empty cell for a new episode and return the instruction.
    fn reset(&mut self, cell: &mut Cell, rng: &mut ChaCha8Rng) -> Result<String, SimError>;
    /// Judge the current state.
    fn evaluate(&self, cell: &Cell) -> Evaluation;
    /// The scripted expert's next action (privileged state).
    fn expert_action(&mut self, cell: &Cell, controller: &Controller) -> Action;
    /// The expert's action before injected noise, for the last [`Self::expert_action`] call
    /// (taken once). Demonstrations record it as the label while the noisy action is what
    /// runs (DART, Laskey et al. 2017): the data visits off-trajectory states, yet every
    /// label says how to get back.
    fn take_expert_label(&mut self) -> Option<Action> {
        None
    }
    /// The step the expert is working on now, as a sentence ("put the red cube in the red
    /// bin"): what a policy that plans in language is taught to say before it acts. Current
    /// as of the last [`Self::expert_action`] call (`None` before the first, or for a task
    /// without sub-steps).
    fn subtask(&self) -> Option<String> {
        None
    }
    /// What this episode's instruction holds out from training, on an evaluation split that
    /// tests generalisation (the task suite's kinds: "color", "combo", "phrasing"); `None`
    /// where nothing is held out. Set by [`Self::reset`]; evaluation tallies success per kind.
    fn held_out(&self) -> Option<&'static str> {
        None
    }
}

/// Settings of an environment, all declarable in TOML.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvConfig {
    pub sim: SimConfig,
    pub control_mode: ControlMode,
    pub cameras: CameraConfig,
    pub render: RenderConfig,
    /// Render observations at all (off for fast success-rate runs of experts).
    pub render_enabled: bool,
    pub randomization: Randomization,
    pub table_rgb: [f32; 3],
    pub background_rgb: [f32; 3],
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            sim: SimConfig::default(),
            control_mode: ControlMode::EeDeltaPose,
            cameras: CameraConfig::default(),
            render: RenderConfig::default(),
            render_enabled: true,
            randomization: Randomization::default(),
            table_rgb: [0.58, 0.46, 0.34],
            background_rgb: [0.80, 0.84, 0.90],
        }
    }
}

/// Episode counters returned in every step's info.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepInfo {
    pub step: usize,
    pub family: String,
    pub last_action: ActionReport,
    pub interventions: InterventionCounts,
}

/// Result of one control step.
#[derive(Clone, Debug)]
pub struct StepResult {
    pub observation: Observation,
    pub reward: f32,
    pub terminated: bool,
    pub truncated: bool,
    pub success: bool,
    pub info: StepInfo,
}

/// The per-episode look (domain randomization draws), kept for rendering.
#[derive(Clone, Debug)]
struct EpisodeLook {
    table_rgb: [f32; 3],
    object_rgb: Vec<[f32; 3]>,
    bin_rgb: Vec<[f32; 3]>,
    lighting: Lighting,
    camera_jitter: [f32; 3],
}

/// One simulated environment's physics and task (rendering is done by [`VecEnv`]).
pub struct Env {
    pub config: EnvConfig,
    description: RobotDescription,
    task: Box<dyn Task>,
    cell: Option<Cell>,
    controller: Option<Controller>,
    instruction: String,
    step_count: usize,
    interventions: InterventionCounts,
    last_report: ActionReport,
    look: Option<EpisodeLook>,
    pose_sources: Vec<PoseSource>,
    done: bool,
}

impl Env {
    pub fn new(task: Box<dyn Task>, config: EnvConfig, description: RobotDescription) -> Self {
        Env {
            config,
            description,
            task,
            cell: None,
            controller: None,
            instruction: String::new(),
            step_count: 0,
            interventions: InterventionCounts::default(),
            last_report: ActionReport::default(),
            look: None,
            pose_sources: Vec::new(),
            done: false,
        }
    }

    /// Start a new episode; the same seed gives the same episode, bit for bit.
    pub fn reset_physics(&mut self, seed: u64) -> Result<(), SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Randomization draws from its own stream so that turning it on does not move objects.
        let mut look_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_10C4_D0A1_7A11);
        let mut cell = Cell::new(self.config.sim.clone(), self.description.clone())?;
        self.instruction = self.task.reset(&mut cell, &mut rng)?;
        let look = self.draw_look(&mut cell, &mut look_rng);
        let controller = cell.home(self.config.control_mode)?;
        // Let objects settle on the table before the first observation.
        let mut settle = controller.clone();
        let hold = Action::new([0.0; 3], [0.0; 3], 0.0);
        for _ in 0..2 {
            settle.step(&mut cell, &hold);
        }
        cell.time = 0.0;
        self.controller = Some(settle);
        self.cell = Some(cell);
        self.look = Some(look);
        self.step_count = 0;
        self.interventions = InterventionCounts::default();
        self.last_report = ActionReport::default();
        self.done = false;
        Ok(())
    }

    fn draw_look(&self, cell: &mut Cell, rng: &mut ChaCha8Rng) -> EpisodeLook {
        let dr = &self.config.randomization;
        let object_rgb: Vec<[f32; 3]> = cell.objects.iter().map(|o| o.spec.rgb).collect();
        let bin_rgb: Vec<[f32; 3]> = cell.receptacles.iter().map(|r| r.spec.rgb).collect();
        let mut look = EpisodeLook {
            table_rgb: self.config.table_rgb,
            object_rgb,
            bin_rgb,
            lighting: Lighting::default(),
            camera_jitter: [0.0; 3],
        };
        if !dr.enabled {
            return look;
        }
        let shade = |c: [f32; 3], rng: &mut ChaCha8Rng| {
            c.map(|v| {
                (v * (1.0 + rng.random_range(-dr.color_shade..=dr.color_shade))).clamp(0.0, 1.0)
            })
        };
        look.object_rgb = look.object_rgb.iter().map(|c| shade(*c, rng)).collect();
        look.bin_rgb = look.bin_rgb.iter().map(|c| shade(*c, rng)).collect();
        if !dr.table_colors.is_empty() {
            look.table_rgb = dr.table_colors[rng.random_range(0..dr.table_colors.len())];
        }
        look.lighting.sun_illuminance =
            rng.random_range(dr.light_illuminance[0]..=dr.light_illuminance[1]);
        let j = dr.light_direction_jitter;
        for v in look.lighting.sun_direction.iter_mut() {
            *v += rng.random_range(-j..=j);
        }
        let c = dr.camera_jitter;
        look.camera_jitter = [
            rng.random_range(-c..=c),
            rng.random_range(-c..=c),
            rng.random_range(-c..=c),
        ];
        for o in &cell.objects {
            let friction = rng.random_range(dr.friction[0]..=dr.friction[1]);
            let scale = rng.random_range(dr.mass_scale[0]..=dr.mass_scale[1]);
            if let Some(col) = cell.world.colliders.get_mut(o.collider) {
                col.set_friction(friction);
                col.set_mass(o.spec.mass * scale);
            }
        }
        look
    }

    fn parts(&self) -> Result<(&Cell, &Controller), SimError> {
        match (&self.cell, &self.controller) {
            (Some(c), Some(k)) => Ok((c, k)),
            _ => Err(SimError::InvalidInput(
                "environment used before reset".into(),
            )),
        }
    }

    /// Swap the task (e.g. to run another family in this slot); takes effect at the next reset.
    pub fn set_task(&mut self, task: Box<dyn Task>) {
        self.task = task;
    }

    pub fn cell(&self) -> Option<&Cell> {
        self.cell.as_ref()
    }

    pub fn controller(&self) -> Option<&Controller> {
        self.controller.as_ref()
    }

    pub fn instruction(&self) -> &str {
        &self.instruction
    }

    pub fn family(&self) -> &str {
        self.task.family()
    }

    /// The scripted expert's action for the current state.
    pub fn expert_action(&mut self) -> Result<Action, SimError> {
        let (cell, controller) = match (&self.cell, &self.controller) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                return Err(SimError::InvalidInput(
                    "environment used before reset".into(),
                ))
            }
        };
        Ok(self.task.expert_action(cell, controller))
    }

    /// The clean label of the last expert action (see [`Task::take_expert_label`]).
    pub fn take_expert_label(&mut self) -> Option<Action> {
        self.task.take_expert_label()
    }

    /// The expert's current sub-task sentence (see [`Task::subtask`]).
    pub fn subtask(&self) -> Option<String> {
        self.task.subtask()
    }

    /// What the current episode holds out from training (see [`Task::held_out`]).
    pub fn held_out(&self) -> Option<&'static str> {
        self.task.held_out()
    }

    /// Advance physics by one control step (no rendering). Returns (reward, terminated,
    /// truncated, success, info).
    pub fn step_physics(
        &mut self,
        action: &Action,
    ) -> Result<(Evaluation, bool, bool, StepInfo), SimError> {
        let (Some(cell), Some(controller)) = (self.cell.as_mut(), self.controller.as_mut()) else {
            return Err(SimError::InvalidInput(
                "environment used before reset".into(),
            ));
        };
        let report = controller.step(cell, action);
        self.interventions.add(&report);
        self.last_report = report;
        self.step_count += 1;
        let eval = self.task.evaluate(cell);
        let terminated = eval.success;
        let truncated = !terminated && self.step_count >= self.task.max_steps();
        self.done = terminated || truncated;
        Ok((eval, terminated, truncated, self.info()))
    }

    pub fn info(&self) -> StepInfo {
        StepInfo {
            step: self.step_count,
            family: self.task.family().to_string(),
            last_action: self.last_report,
            interventions: self.interventions,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Observation without images (images are filled in by the renderer).
    fn blank_observation(&self) -> Result<Observation, SimError> {
        let (cell, _) = self.parts()?;
        let (w, h) = (self.config.render.width, self.config.render.height);
        Ok(Observation {
            front: RgbImage::new(
                if self.config.render_enabled { w } else { 0 },
                if self.config.render_enabled { h } else { 0 },
            ),
            wrist: RgbImage::new(
                if self.config.render_enabled { w } else { 0 },
                if self.config.render_enabled { h } else { 0 },
            ),
            front_depth: None,
            state: cell.proprio_state(),
            instruction: self.instruction.clone(),
        })
    }

    /// Scene description for the renderer (also used by the viewer).
    pub fn render_scene(
        &mut self,
    ) -> Result<(Vec<vla_render::Body>, [f32; 3], Lighting), SimError> {
        let (cell, _) = self.parts()?;
        let look = self
            .look
            .clone()
            .ok_or_else(|| SimError::InvalidInput("no episode".into()))?;
        let (bodies, sources) = scene_bodies(cell, look.table_rgb, &look.object_rgb, &look.bin_rgb);
        self.pose_sources = sources;
        Ok((bodies, self.config.background_rgb, look.lighting))
    }

    pub fn render_poses(&self) -> Vec<vla_core::Pose> {
        match &self.cell {
            Some(cell) => scene_poses(cell, &self.pose_sources),
            None => Vec::new(),
        }
    }

    /// Front and wrist camera views for the current state.
    pub fn camera_views(&self) -> Result<[CameraView; 2], SimError> {
        let (cell, _) = self.parts()?;
        let jitter = self
            .look
            .as_ref()
            .map(|l| l.camera_jitter)
            .unwrap_or([0.0; 3]);
        Ok([
            self.config.cameras.front(jitter),
            self.config.cameras.wrist(cell),
        ])
    }

    /// Positions of every object at the end, for digests.
    pub fn object_states(&self) -> Vec<crate::cell::ObjectState> {
        self.cell
            .as_ref()
            .map(|c| c.object_states())
            .unwrap_or_default()
    }
}

/// N environments stepped in parallel threads; their cameras are rendered in one pass.
pub struct VecEnv {
    pub envs: Vec<Env>,
    renderer: Option<Renderer>,
    scenes: Vec<Option<SceneId>>,
    /// Time spent in physics and in rendering during the last step (s), for benchmarks.
    pub last_physics_s: f64,
    pub last_render_s: f64,
}

impl VecEnv {
    /// Build the environments; a renderer is created when any of them renders.
    pub fn new(envs: Vec<Env>) -> Result<Self, SimError> {
        let render_cfg = envs
            .iter()
            .find(|e| e.config.render_enabled)
            .map(|e| e.config.render.clone());
        let renderer = match render_cfg {
            Some(cfg) => Some(Renderer::new(cfg).map_err(|e| SimError::Render(e.to_string()))?),
            None => None,
        };
        let n = envs.len();
        Ok(VecEnv {
            envs,
            renderer,
            scenes: vec![None; n],
            last_physics_s: 0.0,
            last_render_s: 0.0,
        })
    }

    pub fn len(&self) -> usize {
        self.envs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    /// Reset environment `i` with a seed and return its first observation.
    pub fn reset_one(&mut self, i: usize, seed: u64) -> Result<Observation, SimError> {
        self.envs[i].reset_physics(seed)?;
        if self.envs[i].config.render_enabled {
            let (bodies, bg, light) = self.envs[i].render_scene()?;
            let renderer = self
                .renderer
                .as_mut()
                .ok_or_else(|| SimError::Render("no renderer".into()))?;
            let scene = match self.scenes[i] {
                Some(id) => {
                    renderer
                        .rebuild_scene(id, bodies, bg, light)
                        .map_err(|e| SimError::Render(e.to_string()))?;
                    id
                }
                None => renderer
                    .add_scene(bodies, bg, light)
                    .map_err(|e| SimError::Render(e.to_string()))?,
            };
            self.scenes[i] = Some(scene);
        }
        let mut obs = vec![self.envs[i].blank_observation()?];
        self.render_into(&[i], &mut obs)?;
        Ok(obs.remove(0))
    }

    /// Reset all environments with the given seeds.
    pub fn reset(&mut self, seeds: &[u64]) -> Result<Vec<Observation>, SimError> {
        if seeds.len() != self.envs.len() {
            return Err(SimError::InvalidInput(format!(
                "{} seeds for {} environments",
                seeds.len(),
                self.envs.len()
            )));
        }
        seeds
            .iter()
            .enumerate()
            .map(|(i, s)| self.reset_one(i, *s))
            .collect()
    }

    /// Step every environment with its action (physics in parallel), then render.
    pub fn step(&mut self, actions: &[Action]) -> Result<Vec<StepResult>, SimError> {
        let all: Vec<usize> = (0..self.envs.len()).collect();
        self.step_subset(&all, actions)
    }

    /// Step only the environments in `active` (ascending indices), one action each.
    pub fn step_subset(
        &mut self,
        active: &[usize],
        actions: &[Action],
    ) -> Result<Vec<StepResult>, SimError> {
        if actions.len() != active.len() || active.iter().any(|i| *i >= self.envs.len()) {
            return Err(SimError::InvalidInput(format!(
                "{} actions for {} active environments (of {})",
                actions.len(),
                active.len(),
                self.envs.len()
            )));
        }
        let t0 = std::time::Instant::now();
        let mut selected: Vec<(&mut Env, &Action)> = self
            .envs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, e)| {
                active
                    .iter()
                    .position(|a| *a == i)
                    .map(|k| (e, &actions[k]))
            })
            .collect();
        let physics: Vec<Result<(Evaluation, bool, bool, StepInfo), SimError>> = selected
            .par_iter_mut()
            .map(|(env, a)| env.step_physics(a))
            .collect();
        self.last_physics_s = t0.elapsed().as_secs_f64();
        let mut observations = active
            .iter()
            .map(|i| self.envs[*i].blank_observation())
            .collect::<Result<Vec<_>, _>>()?;
        let t1 = std::time::Instant::now();
        self.render_into(active, &mut observations)?;
        self.last_render_s = t1.elapsed().as_secs_f64();
        physics
            .into_iter()
            .zip(observations)
            .map(|(p, observation)| {
                let (eval, terminated, truncated, info) = p?;
                Ok(StepResult {
                    observation,
                    reward: eval.reward,
                    terminated,
                    truncated,
                    success: eval.success,
                    info,
                })
            })
            .collect()
    }

    /// Render environment `i` as it is now (e.g. to check an observation against its state).
    pub fn render_current(&mut self, i: usize) -> Result<Observation, SimError> {
        let mut obs = vec![self.envs[i].blank_observation()?];
        self.render_into(&[i], &mut obs)?;
        Ok(obs.remove(0))
    }

    /// Render front and wrist views of the given environments into their observations.
    fn render_into(
        &mut self,
        which: &[usize],
        observations: &mut [Observation],
    ) -> Result<(), SimError> {
        let Some(renderer) = self.renderer.as_mut() else {
            return Ok(());
        };
        let mut views = Vec::new();
        let mut slots = Vec::new();
        for (slot, &i) in which.iter().enumerate() {
            let env = &self.envs[i];
            let Some(scene) = self.scenes[i] else {
                continue;
            };
            if !env.config.render_enabled {
                continue;
            }
            renderer
                .set_poses(scene, &env.render_poses())
                .map_err(|e| SimError::Render(e.to_string()))?;
            let [front, wrist] = env.camera_views()?;
            views.push((scene, front));
            views.push((scene, wrist));
            slots.push(slot);
        }
        if views.is_empty() {
            return Ok(());
        }
        let frames = renderer
            .render(&views)
            .map_err(|e| SimError::Render(e.to_string()))?;
        let mut frames = frames.into_iter();
        for slot in slots {
            if let (Some(front), Some(wrist)) = (frames.next(), frames.next()) {
                observations[slot].front = front.rgb;
                observations[slot].front_depth = front.depth;
                observations[slot].wrist = wrist.rgb;
            }
        }
        Ok(())
    }

    /// Random seeds for a batch, derived deterministically from a base seed.
    pub fn seeds(base: u64, n: usize) -> Vec<u64> {
        let mut rng = ChaCha8Rng::seed_from_u64(base);
        (0..n).map(|_| rng.random()).collect()
    }
}
