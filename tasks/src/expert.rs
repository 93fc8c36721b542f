//! Motion primitives shared by the scripted experts: move the commanded tool pose towards a
//! waypoint at a bounded speed, with the fingers aligned to the object.

use nalgebra::{Isometry3, Translation3, UnitQuaternion, Vector2, Vector3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use vla_core::Action;
use vla_sim::kinematics::tool_down;
use vla_sim::{Cell, Controller};

/// Largest translation per control step (m) and rotation (rad) the experts command.
pub const MAX_STEP: f64 = 0.025;
pub const MAX_TURN: f64 = 0.12;
/// Height of the carry and approach moves above the table (m).
pub const CARRY_Z: f64 = 0.20;
/// Approach funnel: height above the grasp allowed per metre of misalignment.
pub const FUNNEL_SLOPE: f64 = 4.0;
/// The drop's funnel ends this share of [`Drop::radius`] from the drop point: anywhere that
/// close counts as over the spot, so lowering and releasing do not wait on millimetres the
/// receptacle does not need (a bin's floor is 13 cm wide).
pub const DROP_SLACK: f64 = 0.25;
/// The fingers count as settled on the object once they are this close to its width (m);
/// the lift starts then, and the fingers count as open after a release this close to fully
/// open. Ending these phases on what the gripper reading shows, not after a fixed number of
/// steps, keeps one label per observation: with a 4-step hold, the last hold steps and the
/// first lift step looked identical (fingers settled, tool still), and a cloned policy that
/// closed a few millimetres high held there for the rest of the episode (5 of 38 failed
/// `pick` episodes of the DAgger checkpoint).
pub const SETTLE_MARGIN: f64 = 0.005;
/// Longest wait for the fingers to close or open (steps).
pub const MAX_GRIPPER_STEPS: usize = 8;

/// A waypoint: tool position, yaw of the finger axis, gripper closed?
#[derive(Clone, Copy, Debug)]
pub struct Waypoint {
    pub position: Vector3<f64>,
    pub yaw: f64,
    pub closed: bool,
}

/// Action moving the commanded pose towards the waypoint; also returns the remaining error.
pub fn toward(controller: &Controller, wp: &Waypoint) -> (Action, f64) {
    let target = Isometry3::from_parts(Translation3::from(wp.position), tool_down(wp.yaw));
    let current = &controller.target;
    let mut dp = target.translation.vector - current.translation.vector;
    let dist = dp.norm();
    if dist > MAX_STEP {
        dp *= MAX_STEP / dist;
    }
    let err = target.rotation * current.rotation.inverse();
    let mut dr = err.scaled_axis();
    let angle = dr.norm();
    if angle > MAX_TURN {
        dr *= MAX_TURN / angle;
    }
    // The controller composes roll/pitch/yaw; for the small steps used here the rotation
    // vector is a good approximation, and the loop closes on the remaining error.
    let action = Action::new(
        [dp.x as f32, dp.y as f32, dp.z as f32],
        [dr.x as f32, dr.y as f32, dr.z as f32],
        if wp.closed { 1.0 } else { 0.0 },
    );
    (action, dist + 0.05 * angle)
}

/// Yaw of the finger axis of the commanded pose.
pub fn current_yaw(controller: &Controller) -> f64 {
    let rot: UnitQuaternion<f64> = controller.target.rotation * tool_down(0.0).inverse();
    rot.euler_angles().2
}

/// Grasp height of the tool centre for an object (its middle, not too close to the table).
pub fn grasp_z(cell: &Cell, object: usize) -> f64 {
    let spec = &cell.objects[object].spec;
    let centre = cell.object_pose(object).translation.vector.z;
    centre.min(spec.height as f64 * 0.5 + 0.005).max(0.018)
}

/// How the executed expert action departs from the expert's clean one while collecting
/// (the clean action stays the label, as in DART, Laskey et al. 2017).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExpertNoise {
    /// Gaussian noise per step (m; twice that in rad for rotations).
    pub sigma: f32,
    /// Speed of the occasional pushes off the path while the fingers are open (m per
    /// step; see [`Pushes`]). 0 = none.
    pub push: f32,
}

impl ExpertNoise {
    pub const NONE: ExpertNoise = ExpertNoise {
        sigma: 0.0,
        push: 0.0,
    };
}

impl From<f32> for ExpertNoise {
    fn from(sigma: f32) -> Self {
        ExpertNoise { sigma, push: 0.0 }
    }
}

/// Probability per open-finger step that a push starts, and its length in steps.
pub const PUSH_START: f64 = 0.08;
pub const PUSH_STEPS: usize = 4;

/// Pushes off the expert's path: now and then, for [`PUSH_STEPS`] steps, the hand is driven
/// sideways in a random horizontal direction (and turned) instead of following the expert.
///
/// A learned policy misses by centimetres; the expert, never off by more than its own
/// tolerances, shows no way back from there. Gaussian noise large enough to cover that
/// keeps the expert from ever meeting its 3 mm descent tolerance, and shakes a held
/// object loose; pushes are rare, only while the fingers are open, and then the expert
/// recovers undisturbed — so the data holds centimetre-scale recoveries.
#[derive(Clone, Debug, Default)]
pub struct Pushes {
    left: usize,
    direction: [f32; 2],
    turn: f32,
}

impl Pushes {
    /// Push `action` if a push is under way or starts now, unless its gripper command is
    /// closed (noise never touches that command, so it is the expert's own). With pushes
    /// on, draws the same random numbers every step, so episodes stay reproducible; with
    /// them off, none (the Gaussian noise stream is unchanged).
    pub fn apply(&mut self, action: &mut Action, speed: f32, rng: &mut ChaCha8Rng) {
        if speed <= 0.0 {
            return;
        }
        let (start, angle, turn): (f64, f32, f32) = (
            rng.random(),
            rng.random_range(0.0..std::f32::consts::TAU),
            rng.random_range(-1.0..1.0),
        );
        if action.0[6] > 0.5 {
            self.left = 0;
            return;
        }
        if self.left == 0 && start < PUSH_START {
            self.left = PUSH_STEPS;
            self.direction = [angle.cos(), angle.sin()];
            self.turn = turn * MAX_TURN as f32 * 0.5;
        }
        if self.left > 0 {
            self.left -= 1;
            action.0[0] = self.direction[0] * speed;
            action.0[1] = self.direction[1] * speed;
            action.0[2] = 0.0;
            action.0[5] = self.turn;
        }
    }
}

/// Gaussian action noise for data diversity (translation and rotation only).
pub fn add_noise(action: &mut Action, sigma: f32, rng: &mut ChaCha8Rng) {
    if sigma <= 0.0 {
        return;
    }
    if let Ok(normal) = Normal::new(0.0f32, sigma) {
        for v in action.0.iter_mut().take(3) {
            *v += normal.sample(rng);
        }
        for v in action.0.iter_mut().skip(3).take(3) {
            *v += normal.sample(rng) * 2.0;
        }
    }
    let _ = rng.random::<u8>();
}

/// Phases of a pick-and-place, shared by every family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Approach,
    Descend,
    Close,
    Lift,
    Carry,
    Lower,
    Release,
    Retreat,
    Done,
}

/// Where to put the held object: above a point at a given release height.
#[derive(Clone, Copy, Debug)]
pub struct Drop {
    pub xy: [f64; 2],
    /// Tool height at which to open the fingers.
    pub release_z: f64,
    /// Centre of the area that counts as put down: a bin's centre, while `xy` may aim at a
    /// free corner of it.
    pub area: [f64; 2],
    /// How far (m, along x or along y) from `area` the released object's centre may come to
    /// rest and still count as put down; farther, the expert picks it up again.
    pub radius: f64,
}

impl Drop {
    /// How far (m) the tool's `xy` is from the drop point beyond [`DROP_SLACK`] of the room
    /// the area leaves around it; 0 or less is over the spot.
    fn beyond_slack(&self, xy: Vector2<f64>) -> f64 {
        let aim = Vector2::from(self.xy);
        let room = self.radius - (aim - Vector2::from(self.area)).amax();
        (aim - xy).norm() - DROP_SLACK * room
    }
}

/// Below this height (m) of its bottom above the table, an object that no finger holds has
/// fallen: it is on the table or a bin's floor, not between the fingers for a moment.
const FALLEN_HEIGHT: f64 = 0.025;

/// A scripted pick (and optionally place) of one object, closed-loop on privileged state.
#[derive(Clone, Debug)]
pub struct PickPlace {
    pub object: usize,
    pub drop: Option<Drop>,
    pub phase: Phase,
    counter: usize,
    yaw: f64,
    hold_xy: [f64; 2],
    attempts: usize,
    /// Gripper opening at the previous action (m), to tell when the fingers stop moving.
    last_opening: f64,
}

impl PickPlace {
    pub fn new(object: usize, drop: Option<Drop>) -> Self {
        PickPlace {
            object,
            drop,
            phase: Phase::Approach,
            counter: 0,
            yaw: 0.0,
            hold_xy: [0.0; 2],
            attempts: 0,
            last_opening: f64::NAN,
        }
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The phase to go on from when a later phase finds the object not where it assumes
    /// (`None`: where it should be). Its own runs seldom get here; a learner driving (DAgger)
    /// often does.
    /// - Dropped while carried or lowered, let go outside the drop area, or (pick) no longer
    ///   held: start over from the approach. Without this every later label would carry an
    ///   empty gripper to the bin or hover over an object left on the table.
    /// - Let go while carried or lowered but over the drop area (`fingers_closed`: the gripper
    ///   command the last step ran): it fell in, so retreat.
    ///   Counted as a drop, the label was "fetch it back out", which a policy trained on it
    ///   then did.
    fn recovery_phase(&self, cell: &Cell, fingers_closed: bool) -> Option<Phase> {
        let held = cell.is_grasped(self.object);
        let fallen = !held && cell.object_bottom_height(self.object) < FALLEN_HEIGHT;
        let on_drop = self.rests_on_the_drop(cell);
        // Fingers opened over the drop area: a block a learner let go above its base lands on
        // it (its bottom stays high, so it never counts as fallen); the label is to rise, not
        // to close on it again and keep lowering.
        let let_go_over_drop = !fingers_closed && on_drop;
        match (self.phase, self.drop) {
            (Phase::Carry | Phase::Lower, _) if fallen || let_go_over_drop => Some(if on_drop {
                Phase::Retreat
            } else {
                Phase::Approach
            }),
            (Phase::Retreat | Phase::Done, Some(_)) if !held && !on_drop => Some(Phase::Approach),
            (Phase::Done, None) if fallen => Some(Phase::Approach),
            _ => None,
        }
    }

    /// Whether the object's centre lies within the drop area (`false` without one).
    fn rests_on_the_drop(&self, cell: &Cell) -> bool {
        self.drop.is_some_and(|drop| {
            let obj = cell.object_pose(self.object).translation.vector;
            let off = (obj.x - drop.area[0])
                .abs()
                .max((obj.y - drop.area[1]).abs());
            off <= drop.radius
        })
    }

    /// Next action; advances phases as waypoints are reached.
    pub fn act(&mut self, cell: &Cell, controller: &Controller) -> Action {
        let obj = cell.object_pose(self.object).translation.vector;
        let tool = controller.target.translation.vector;
        let opening = cell.robot.gripper_opening(&cell.world);
        let fully_open = 2.0 * cell.robot.finger_range().1;
        let width = cell.objects[self.object].spec.size as f64;
        // Fingers that moved less than a millimetre since the last action have stopped (once
        // they have started to close: on an object held wider than its width).
        let stopped = (self.last_opening - opening).abs() < 0.001;
        self.last_opening = opening;
        // When a learned policy drives (DAgger) it may close on the object before this
        // expert would have: a held object is lifted, not let go to start the approach over.
        if matches!(self.phase, Phase::Approach | Phase::Descend)
            && controller.gripper_closed
            && cell.is_grasped(self.object)
        {
            self.hold_xy = [tool.x, tool.y];
            self.counter = 0;
            self.phase = Phase::Lift;
        }
        if let Some(phase) = self.recovery_phase(cell, controller.gripper_closed) {
            self.counter = 0;
            self.phase = phase;
        }
        loop {
            let (wp, tolerance) = match self.phase {
                Phase::Approach => {
                    // The wrist does not turn to the object's faces: the open fingers (8 cm)
                    // take a 4 cm cube at any yaw (5.7 cm diagonal) and square it up as they
                    // close. Expert success is unchanged without the turn (40 episodes per
                    // family at noise 0.004, before → after all of this session's changes:
                    // pick 36 → 36, place 40 → 40, stack 37 → 37, sort 37 → 38), and the turn
                    // was an action the policy had to read off a few pixels; it never learned
                    // it (no turn in any of the 17 of 50 `pick` episodes that needed one).
                    self.yaw = current_yaw(controller);
                    let gz = grasp_z(cell, self.object);
                    let high = (gz + 0.10).max(tool.z.min(CARRY_Z));
                    // A funnel: the better the fingers line up over the object, the lower
                    // they may go, so the descent blends into the alignment instead of
                    // following a hover that ends on a 6 mm threshold. A learned policy
                    // cannot see that threshold and hovers; it can imitate a funnel.
                    let misalignment = (obj.xy() - tool.xy()).norm();
                    let z = high.min(gz + FUNNEL_SLOPE * misalignment).max(gz);
                    (
                        Waypoint {
                            position: Vector3::new(obj.x, obj.y, z),
                            yaw: self.yaw,
                            closed: false,
                        },
                        0.006,
                    )
                }
                Phase::Descend => {
                    let z = grasp_z(cell, self.object);
                    (
                        Waypoint {
                            position: Vector3::new(obj.x, obj.y, z),
                            yaw: self.yaw,
                            closed: false,
                        },
                        0.003,
                    )
                }
                Phase::Close => {
                    let p = Vector3::new(self.hold_xy[0], self.hold_xy[1], tool.z);
                    (
                        Waypoint {
                            position: p,
                            yaw: self.yaw,
                            closed: true,
                        },
                        f64::INFINITY,
                    )
                }
                Phase::Lift => {
                    let p = Vector3::new(self.hold_xy[0], self.hold_xy[1], CARRY_Z);
                    (
                        Waypoint {
                            position: p,
                            yaw: self.yaw,
                            closed: true,
                        },
                        0.01,
                    )
                }
                Phase::Carry => {
                    let (d, z) = match self.drop {
                        // A funnel down to the release height, as for the approach: a
                        // learner a centimetre or two off the drop point that starts to lower
                        // is told to go on lowering (and drift over), not to climb back to
                        // the carry height for a 6 mm alignment first — that label, against
                        // the lowering it had learned, left policies bobbing above the bin.
                        // The held object's bottom stays above the walls until the release.
                        Some(drop) => {
                            let beyond = drop.beyond_slack(tool.xy()).max(0.0);
                            let z = drop.release_z + FUNNEL_SLOPE * beyond;
                            (
                                drop.xy,
                                z.clamp(drop.release_z, CARRY_Z.max(drop.release_z)),
                            )
                        }
                        None => (self.hold_xy, CARRY_Z),
                    };
                    (
                        Waypoint {
                            position: Vector3::new(d[0], d[1], z),
                            yaw: self.yaw,
                            closed: true,
                        },
                        0.006,
                    )
                }
                Phase::Lower => {
                    let d = self
                        .drop
                        .map(|d| (d.xy, d.release_z))
                        .unwrap_or((self.hold_xy, CARRY_Z));
                    (
                        Waypoint {
                            position: Vector3::new(d.0[0], d.0[1], d.1),
                            yaw: self.yaw,
                            closed: true,
                        },
                        0.004,
                    )
                }
                Phase::Release => (
                    Waypoint {
                        position: tool,
                        yaw: self.yaw,
                        closed: false,
                    },
                    f64::INFINITY,
                ),
                Phase::Retreat | Phase::Done => {
                    let p = Vector3::new(tool.x, tool.y, CARRY_Z);
                    let hold = self.drop.is_none();
                    (
                        Waypoint {
                            position: p,
                            yaw: self.yaw,
                            closed: hold,
                        },
                        0.01,
                    )
                }
            };
            let (action, error) = toward(controller, &wp);
            let reached = match self.phase {
                // At least one step with the new command, then until the fingers settle: on
                // the object's width, or stopped after they started to close (they may pause
                // for a step before moving).
                Phase::Close => {
                    (self.counter >= 1 && opening <= width + SETTLE_MARGIN)
                        || (opening < fully_open - 2.0 * SETTLE_MARGIN && stopped)
                        || self.counter >= MAX_GRIPPER_STEPS
                }
                Phase::Release => {
                    (self.counter >= 1 && opening >= fully_open - SETTLE_MARGIN)
                        || self.counter >= MAX_GRIPPER_STEPS
                }
                // Over the drop point within the slack, at the release height.
                Phase::Carry | Phase::Lower => match self.drop {
                    Some(d) => {
                        d.beyond_slack(tool.xy()) <= 0.0 && (tool.z - d.release_z).abs() < tolerance
                    }
                    None => error < tolerance,
                },
                _ => error < tolerance,
            };
            if !reached || self.phase == Phase::Done {
                self.counter += 1;
                return action;
            }
            self.counter = 0;
            self.phase = match self.phase {
                Phase::Approach => Phase::Descend,
                Phase::Descend => {
                    self.hold_xy = [obj.x, obj.y];
                    Phase::Close
                }
                Phase::Close => Phase::Lift,
                Phase::Lift => {
                    if !cell.is_grasped(self.object) && self.attempts < 3 {
                        // Missed: open and try again from above.
                        self.attempts += 1;
                        Phase::Approach
                    } else if self.drop.is_some() {
                        Phase::Carry
                    } else {
                        Phase::Done
                    }
                }
                Phase::Carry => Phase::Lower,
                Phase::Lower => Phase::Release,
                Phase::Release => Phase::Retreat,
                Phase::Retreat | Phase::Done => Phase::Done,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn pushed(speed: f32, closed: bool, seed: u64) -> Vec<Action> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pushes = Pushes::default();
        let clean = Action::new(
            [0.01, 0.0, -0.005],
            [0.0; 3],
            if closed { 1.0 } else { 0.0 },
        );
        (0..400)
            .map(|_| {
                let mut a = clean;
                pushes.apply(&mut a, speed, &mut rng);
                a
            })
            .collect()
    }

    #[test]
    fn pushes_are_rare_fixed_length_sideways_and_only_with_open_fingers() {
        let clean = Action::new([0.01, 0.0, -0.005], [0.0; 3], 0.0);
        let actions = pushed(0.01, false, 3);
        let is_push: Vec<bool> = actions.iter().map(|a| a.0 != clean.0).collect();
        let pushed_steps = is_push.iter().filter(|p| **p).count();
        // Starts with probability PUSH_START per free step, each PUSH_STEPS long.
        assert!(
            (40..=200).contains(&pushed_steps),
            "{pushed_steps} of 400 steps pushed"
        );
        // Runs come in multiples of PUSH_STEPS (two pushes may follow each other); the
        // last one may be cut off by the end of the sequence.
        let mut run = 0;
        let complete = is_push.len() - is_push.iter().rev().take_while(|p| **p).count();
        for p in is_push[..complete].iter().chain([&false]) {
            if *p {
                run += 1;
            } else {
                assert_eq!(run % PUSH_STEPS, 0, "a push of {run} steps");
                run = 0;
            }
        }
        for a in actions.iter().filter(|a| a.0 != clean.0) {
            let speed = a.0[0].hypot(a.0[1]);
            assert!((speed - 0.01).abs() < 1e-6, "horizontal speed {speed}");
            assert_eq!(a.0[2], 0.0, "pushes are horizontal");
            assert!(a.0[5].abs() <= MAX_TURN as f32 * 0.5);
            assert_eq!(a.0[6], 0.0, "the gripper command is never pushed");
        }
        // Holding an object: never pushed. Off: nothing changes.
        let held = Action::new([0.01, 0.0, -0.005], [0.0; 3], 1.0);
        assert!(pushed(0.01, true, 3).iter().all(|a| a.0 == held.0));
        assert!(pushed(0.0, false, 3).iter().all(|a| a.0 == clean.0));
        // Reproducible from the seed, and the seed matters.
        let again = pushed(0.01, false, 3);
        assert!(actions.iter().zip(&again).all(|(a, b)| a.0 == b.0));
        let other = pushed(0.01, false, 4);
        assert!(actions.iter().zip(&other).any(|(a, b)| a.0 != b.0));
    }
}
