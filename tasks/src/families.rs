//! The task families. Each says, in one place, how it builds its scene, starts an episode,
//! judges success from physical state, and how its expert solves it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use vla_core::Action;
use vla_sim::{
    Cell, Controller, Evaluation, ObjectKind, ObjectSpec, ReceptacleSpec, SimError, Task,
};

use crate::expert::{add_noise, Drop, ExpertNoise, Phase, PickPlace, Pushes};
use crate::language::{Language, Novelty, Referents, Split};
use crate::layout;

/// Lifted means the object's bottom is at least this far above the table (m).
pub const LIFT_HEIGHT: f64 = 0.05;

/// Shared episode settings of every family.
#[derive(Clone, Debug)]
pub struct Common {
    pub language: Language,
    pub split: Split,
    /// How executed expert actions depart from the clean ones (Gaussian noise, pushes).
    pub expert_noise: ExpertNoise,
    pub noise_rng: ChaCha8Rng,
    pub pushes: Pushes,
    /// The expert's action before noise, kept until read (see [`Task::take_expert_label`]).
    pub clean_action: Option<Action>,
    /// The step the expert is on (see [`Task::subtask`]).
    pub subtask: Option<String>,
    /// What the episode's instruction holds out (the unseen split), as its reset drew it.
    pub held_out: Option<Novelty>,
}

impl Common {
    fn novelty(&self, rng: &mut ChaCha8Rng, family: &str) -> Option<Novelty> {
        (self.split == Split::Unseen).then(|| self.language.draw_novelty(rng, family))
    }

    fn finish(&mut self, mut action: Action) -> Action {
        self.clean_action = Some(action);
        add_noise(&mut action, self.expert_noise.sigma, &mut self.noise_rng);
        let push = self.expert_noise.push;
        self.pushes.apply(&mut action, push, &mut self.noise_rng);
        action
    }
}

/// A task's own error (a layout that did not fit, task data at fault) as a reset reports it.
fn task_err(e: crate::TaskError) -> SimError {
    SimError::InvalidInput(e.to_string())
}

fn released(cell: &Cell, object: usize) -> bool {
    !cell.touches_gripper(object) && cell.object_speed(object) < 0.05
}

// ---------------------------------------------------------------------------------------
/// "pick up the red cube": lift the named object off the table.
pub struct Pick {
    pub common: Common,
    target: usize,
    expert: PickPlace,
}

impl Pick {
    pub fn new(common: Common) -> Self {
        Pick {
            common,
            target: 0,
            expert: PickPlace::new(0, None),
        }
    }
}

impl Task for Pick {
    fn family(&self) -> &str {
        "pick"
    }

    fn take_expert_label(&mut self) -> Option<Action> {
        self.common.clean_action.take()
    }

    fn subtask(&self) -> Option<String> {
        self.common.subtask.clone()
    }

    fn held_out(&self) -> Option<&'static str> {
        self.common.held_out.map(Novelty::name)
    }

    fn max_steps(&self) -> usize {
        80
    }

    /// Scene: the target and two distractors of other colours.
    fn reset(&mut self, cell: &mut Cell, rng: &mut ChaCha8Rng) -> Result<String, SimError> {
        let lang = &self.common.language;
        let novelty = self.common.novelty(rng, "pick");
        let (color, kind) = lang.draw_target(rng, self.common.split, novelty, &ObjectKind::ALL);
        let mut chosen = vec![(color.clone(), kind)];
        for _ in 0..2 {
            let d = lang.draw_distractor(rng, self.common.split, &ObjectKind::ALL, &chosen);
            chosen.push(d);
        }
        let specs: Vec<ObjectSpec> = chosen
            .iter()
            .map(|(c, k)| ObjectSpec::new(*k, c, lang.rgb(c)))
            .collect();
        let radii: Vec<f32> = specs.iter().map(|s| s.footprint_radius()).collect();
        let spots = layout::place(rng, &radii).map_err(task_err)?;
        for (spec, xy) in specs.into_iter().zip(spots) {
            let yaw = rng.random_range(-0.7f32..0.7);
            cell.add_object(spec, xy[0], xy[1], yaw);
        }
        self.target = 0;
        self.expert = PickPlace::new(0, None);
        let referents = Referents {
            object: Some((&color, kind)),
            ..Default::default()
        };
        let instruction = lang.phrase(rng, "pick", self.common.split, novelty, referents);
        self.common.subtask = Some(lang.subtask("pick", referents));
        self.common.held_out = novelty;
        Ok(instruction)
    }

    /// Success: the target is ≥ 5 cm above the table and touches both fingers.
    fn evaluate(&self, cell: &Cell) -> Evaluation {
        let success =
            cell.object_bottom_height(self.target) >= LIFT_HEIGHT && cell.is_grasped(self.target);
        Evaluation::from_success(success)
    }

    fn expert_action(&mut self, cell: &Cell, controller: &Controller) -> Action {
        let a = self.expert.act(cell, controller);
        self.common.finish(a)
    }
}

// ---------------------------------------------------------------------------------------
/// "put the red cube in the blue bin": pick the object and release it inside the bin.
pub struct Place {
    pub common: Common,
    target: usize,
    bin: usize,
    expert: PickPlace,
}

impl Place {
    pub fn new(common: Common) -> Self {
        Place {
            common,
            target: 0,
            bin: 0,
            expert: PickPlace::new(0, None),
        }
    }
}

/// How far (m, along x and along y) from a bin's centre the expert lets go of an object when
/// another already lies in the bin: on the floor across from it, not on top (a ball let go
/// over a can rolls off it and over the wall).
const BESIDE: f64 = 0.03;

/// Over the centre of `bin`, or over the corner across from the first object already in it.
fn drop_into(cell: &Cell, bin: usize, object: usize) -> Drop {
    let r = &cell.receptacles[bin];
    let h = cell.objects[object].spec.height as f64;
    let centre = [r.position[0] as f64, r.position[1] as f64];
    let occupant = (0..cell.objects.len())
        .find(|&o| o != object && cell.object_in_receptacle(o, bin))
        .map(|o| cell.object_pose(o).translation.vector);
    let away = |d: f64| if d > 0.0 { -BESIDE } else { BESIDE };
    let xy = match occupant {
        Some(p) => [
            centre[0] + away(p.x - centre[0]),
            centre[1] + away(p.y - centre[1]),
        ],
        None => centre,
    };
    Drop {
        xy,
        release_z: r.spec.wall_height as f64 + h * 0.5 + 0.025,
        area: centre,
        // The bound of `Cell::object_in_receptacle` (bins stand unrotated).
        radius: r.spec.inner_half[0].min(r.spec.inner_half[1]) as f64,
    }
}

impl Task for Place {
    fn family(&self) -> &str {
        "place"
    }

    fn take_expert_label(&mut self) -> Option<Action> {
        self.common.clean_action.take()
    }

    fn subtask(&self) -> Option<String> {
        self.common.subtask.clone()
    }

    fn held_out(&self) -> Option<&'static str> {
        self.common.held_out.map(Novelty::name)
    }

    fn max_steps(&self) -> usize {
        150
    }

    /// Scene: target, one distractor object, the target bin and a bin of another colour.
    fn reset(&mut self, cell: &mut Cell, rng: &mut ChaCha8Rng) -> Result<String, SimError> {
        let lang = &self.common.language;
        let split = self.common.split;
        let novelty = self.common.novelty(rng, "place");
        let (color, kind) = lang.draw_target(rng, split, novelty, &ObjectKind::ALL);
        let distractor =
            lang.draw_distractor(rng, split, &ObjectKind::ALL, &[(color.clone(), kind)]);
        let bin_color = lang
            .draw_distractor(
                rng,
                split,
                &[ObjectKind::Cube],
                &[(color.clone(), kind), distractor.clone()],
            )
            .0;
        let other_bin = lang
            .draw_distractor(
                rng,
                split,
                &[ObjectKind::Cube],
                &[(bin_color.clone(), kind), (color.clone(), kind)],
            )
            .0;
        let bins = [
            ReceptacleSpec::bin(&bin_color, lang.rgb(&bin_color)),
            ReceptacleSpec::bin(&other_bin, lang.rgb(&other_bin)),
        ];
        let objects = [
            ObjectSpec::new(kind, &color, lang.rgb(&color)),
            ObjectSpec::new(distractor.1, &distractor.0, lang.rgb(&distractor.0)),
        ];
        let mut radii: Vec<f32> = bins.iter().map(|b| b.footprint_radius()).collect();
        radii.extend(objects.iter().map(|o| o.footprint_radius()));
        let spots = layout::place(rng, &radii).map_err(task_err)?;
        for (b, xy) in bins.into_iter().zip(&spots) {
            cell.add_receptacle(b, xy[0], xy[1], 0.0);
        }
        for (o, xy) in objects.into_iter().zip(&spots[2..]) {
            let yaw = rng.random_range(-0.7f32..0.7);
            cell.add_object(o, xy[0], xy[1], yaw);
        }
        self.target = 0;
        self.bin = 0;
        self.expert = PickPlace::new(0, Some(drop_into(cell, 0, 0)));
        let referents = Referents {
            object: Some((&color, kind)),
            bin: Some(&bin_color),
            ..Default::default()
        };
        let instruction = lang.phrase(rng, "place", split, novelty, referents);
        self.common.subtask = Some(lang.subtask("place", referents));
        self.common.held_out = novelty;
        Ok(instruction)
    }

    /// Success: the target rests inside the named bin and the gripper has let go.
    fn evaluate(&self, cell: &Cell) -> Evaluation {
        let success =
            cell.object_in_receptacle(self.target, self.bin) && released(cell, self.target);
        Evaluation::from_success(success)
    }

    fn expert_action(&mut self, cell: &Cell, controller: &Controller) -> Action {
        let a = self.expert.act(cell, controller);
        self.common.finish(a)
    }
}

// ---------------------------------------------------------------------------------------
/// "stack the green block on the yellow block": the assembly cell.
pub struct Stack {
    pub common: Common,
    top: usize,
    base: usize,
    expert: PickPlace,
}

impl Stack {
    pub fn new(common: Common) -> Self {
        Stack {
            common,
            top: 0,
            base: 1,
            expert: PickPlace::new(0, None),
        }
    }
}

impl Task for Stack {
    fn family(&self) -> &str {
        "stack"
    }

    fn take_expert_label(&mut self) -> Option<Action> {
        self.common.clean_action.take()
    }

    fn subtask(&self) -> Option<String> {
        self.common.subtask.clone()
    }

    fn held_out(&self) -> Option<&'static str> {
        self.common.held_out.map(Novelty::name)
    }

    fn max_steps(&self) -> usize {
        150
    }

    /// Scene: the two named blocks and one distractor block.
    fn reset(&mut self, cell: &mut Cell, rng: &mut ChaCha8Rng) -> Result<String, SimError> {
        let lang = &self.common.language;
        let split = self.common.split;
        let novelty = self.common.novelty(rng, "stack");
        let cube = [ObjectKind::Cube];
        let (top_color, _) = lang.draw_target(
            rng,
            split,
            novelty
                .filter(|n| *n != Novelty::Combo)
                .or(Some(Novelty::Phrasing))
                .filter(|_| split == Split::Unseen),
            &cube,
        );
        let base_color = lang
            .draw_distractor(
                rng,
                Split::Seen,
                &cube,
                &[(top_color.clone(), ObjectKind::Cube)],
            )
            .0;
        let other = lang
            .draw_distractor(
                rng,
                split,
                &cube,
                &[
                    (top_color.clone(), ObjectKind::Cube),
                    (base_color.clone(), ObjectKind::Cube),
                ],
            )
            .0;
        let objects = [&top_color, &base_color, &other]
            .map(|c| ObjectSpec::new(ObjectKind::Cube, c, lang.rgb(c)));
        let radii: Vec<f32> = objects.iter().map(|o| o.footprint_radius()).collect();
        let spots = layout::place(rng, &radii).map_err(task_err)?;
        for (o, xy) in objects.into_iter().zip(&spots) {
            let yaw = rng.random_range(-0.7f32..0.7);
            cell.add_object(o, xy[0], xy[1], yaw);
        }
        self.top = 0;
        self.base = 1;
        let base = cell.object_pose(1).translation.vector;
        let h = cell.objects[1].spec.height as f64;
        let drop = Drop {
            xy: [base.x, base.y],
            area: [base.x, base.y],
            release_z: h + cell.objects[0].spec.height as f64 * 0.5 + 0.006,
            // Resting on the base: its centre within half the base's width of the base's.
            radius: cell.objects[1].spec.size as f64 * 0.5,
        };
        self.expert = PickPlace::new(0, Some(drop));
        let phrasing = if split == Split::Unseen && novelty != Some(Novelty::Color) {
            Some(Novelty::Phrasing)
        } else {
            novelty
        };
        let referents = Referents {
            object: Some((&top_color, ObjectKind::Cube)),
            base: Some((&base_color, ObjectKind::Cube)),
            bin: None,
        };
        let instruction = lang.phrase(rng, "stack", split, phrasing, referents);
        self.common.subtask = Some(lang.subtask("stack", referents));
        // Blocks only: a drawn combo is held out as phrasing (above).
        self.common.held_out = phrasing;
        Ok(instruction)
    }

    /// Success: the top block rests on the base block (centred within half a block, its
    /// bottom at the base's top), the base is on the table, and the gripper has let go.
    fn evaluate(&self, cell: &Cell) -> Evaluation {
        let top = cell.object_pose(self.top).translation.vector;
        let base = cell.object_pose(self.base).translation.vector;
        let size = cell.objects[self.base].spec.size as f64;
        let h = cell.objects[self.base].spec.height as f64;
        let centred = (top.xy() - base.xy()).norm() < size * 0.5;
        let on_top = (cell.object_bottom_height(self.top)
            - (cell.object_bottom_height(self.base) + h))
            .abs()
            < 0.01;
        let success = centred
            && on_top
            && cell.objects_touch(self.top, self.base)
            && cell.touches_table(self.base)
            && released(cell, self.top);
        let _ = top;
        Evaluation::from_success(success)
    }

    fn expert_action(&mut self, cell: &Cell, controller: &Controller) -> Action {
        // Re-aim at the base's current position (it may have been nudged).
        if let Some(d) = self.expert.drop.as_mut() {
            let b = cell.object_pose(self.base).translation.vector;
            d.xy = [b.x, b.y];
        }
        let a = self.expert.act(cell, controller);
        self.common.finish(a)
    }
}

// ---------------------------------------------------------------------------------------
/// "put every object in the bin of its colour": the sorting cell.
pub struct Sort {
    pub common: Common,
    /// (object, bin) pairs.
    assignment: Vec<(usize, usize)>,
    expert: Option<PickPlace>,
}

impl Sort {
    pub fn new(common: Common) -> Self {
        Sort {
            common,
            assignment: Vec::new(),
            expert: None,
        }
    }
}

impl Task for Sort {
    fn family(&self) -> &str {
        "sort"
    }

    fn take_expert_label(&mut self) -> Option<Action> {
        self.common.clean_action.take()
    }

    fn subtask(&self) -> Option<String> {
        self.common.subtask.clone()
    }

    fn held_out(&self) -> Option<&'static str> {
        self.common.held_out.map(Novelty::name)
    }

    fn max_steps(&self) -> usize {
        320
    }

    /// Scene: two bins of different colours and three objects of those colours. The two of
    /// one colour differ in kind, so the step the expert names ("put the red ball in the red
    /// bin") fits one object: with two red cubes it fitted both, and the grounding heads were
    /// trained towards a choice their sentence could not tell (README, sessions 30-32).
    fn reset(&mut self, cell: &mut Cell, rng: &mut ChaCha8Rng) -> Result<String, SimError> {
        let lang = &self.common.language;
        let split = self.common.split;
        let novelty = self.common.novelty(rng, "sort");
        let first = lang.draw_target(rng, split, novelty, &ObjectKind::ALL);
        let second =
            lang.draw_distractor(rng, split, &ObjectKind::ALL, std::slice::from_ref(&first));
        let colors = [first.0.clone(), second.0.clone()];
        let twin = if rng.random_bool(0.5) {
            &first
        } else {
            &second
        };
        let third = (
            twin.0.clone(),
            lang.draw_other_kind(rng, &twin.0, twin.1)
                .map_err(task_err)?,
        );
        let referents = [first, second, third];
        let bins = colors
            .clone()
            .map(|c| ReceptacleSpec::bin(&c, lang.rgb(&c)));
        let blocks = referents
            .clone()
            .map(|(c, k)| ObjectSpec::new(k, &c, lang.rgb(&c)));
        let mut radii: Vec<f32> = bins.iter().map(|b| b.footprint_radius()).collect();
        radii.extend(blocks.iter().map(|o| o.footprint_radius()));
        let spots = layout::place(rng, &radii).map_err(task_err)?;
        for (b, xy) in bins.into_iter().zip(&spots) {
            cell.add_receptacle(b, xy[0], xy[1], 0.0);
        }
        self.assignment.clear();
        for (i, (o, xy)) in blocks.into_iter().zip(&spots[2..]).enumerate() {
            let yaw = rng.random_range(-0.7f32..0.7);
            let bin = if referents[i].0 == colors[0] { 0 } else { 1 };
            let id = cell.add_object(o, xy[0], xy[1], yaw);
            self.assignment.push((id, bin));
        }
        self.expert = None;
        self.common.subtask = None;
        self.common.held_out = novelty;
        Ok(lang.phrase(rng, "sort", split, novelty, Referents::default()))
    }

    /// Success: every object is inside the bin of its colour and released.
    fn evaluate(&self, cell: &Cell) -> Evaluation {
        let placed = self
            .assignment
            .iter()
            .filter(|(o, b)| cell.object_in_receptacle(*o, *b) && released(cell, *o))
            .count();
        let success = placed == self.assignment.len();
        Evaluation {
            success,
            reward: placed as f32 / self.assignment.len().max(1) as f32,
        }
    }

    fn expert_action(&mut self, cell: &Cell, controller: &Controller) -> Action {
        let tool = controller.target.translation.vector;
        let tool = [tool.x, tool.y];
        if self.expert.as_ref().is_none_or(|e| e.done()) {
            self.expert = self
                .nearest_unsorted(cell, tool, None)
                .map(|(o, b)| PickPlace::new(o, Some(drop_into(cell, b, o))));
        }
        let a = match self.expert.as_mut() {
            Some(e) => e.act(cell, controller),
            None => Action::new([0.0; 3], [0.0; 3], 0.0),
        };
        // The step named is the one the next gripper event belongs to (what the grounding
        // targets of the data aim at): once the fingers open over the bin, the next object.
        let current = self.expert.as_ref().map(|e| {
            let bin = self
                .assignment
                .iter()
                .find(|(o, _)| *o == e.object)
                .map_or(0, |(_, b)| *b);
            (e.object, bin, e.phase)
        });
        let step = match current {
            Some((o, b, Phase::Release | Phase::Retreat | Phase::Done)) => {
                self.nearest_unsorted(cell, tool, Some(o)).or(Some((o, b)))
            }
            Some((o, b, _)) => Some((o, b)),
            None => None,
        };
        if let Some((o, b)) = step {
            let lang = &self.common.language;
            let block = &cell.objects[o].spec;
            let bin = &cell.receptacles[b].spec;
            self.common.subtask = Some(lang.subtask(
                "place",
                Referents {
                    object: Some((&block.color_name, block.kind)),
                    bin: Some(&bin.color_name),
                    ..Default::default()
                },
            ));
        }
        self.common.finish(a)
    }
}

impl Sort {
    /// The (object, bin) of the object not yet in its bin that is nearest the gripper
    /// (horizontally), other than `except`: a choice the scene shows (the gripper and the
    /// objects are in the images), where a fixed order by colour would be a coin toss a
    /// policy could not learn.
    fn nearest_unsorted(
        &self,
        cell: &Cell,
        tool: [f64; 2],
        except: Option<usize>,
    ) -> Option<(usize, usize)> {
        self.assignment
            .iter()
            .filter(|(o, b)| Some(*o) != except && !cell.object_in_receptacle(*o, *b))
            .map(|&(o, b)| {
                let p = cell.object_pose(o).translation.vector;
                ((p.x - tool[0]).hypot(p.y - tool[1]), o, b)
            })
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .map(|(_, o, b)| (o, b))
    }
}
