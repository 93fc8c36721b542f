//! Limit decorators: each enforces one limit on any inner sink and counts interventions.

use std::sync::Arc;

use super::{
    ArmModel, Command, CommandSink, Interventions, Limits, Motion, SharedJoints, SinkError,
    ToolPosition, Twist,
};

fn norm(v: &[f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// NaN or infinity anywhere → stop (zero twist; a non-finite gripper value keeps the gripper).
pub struct FiniteGuard<S> {
    inner: S,
    counts: Arc<Interventions>,
}

impl<S: CommandSink> FiniteGuard<S> {
    pub fn new(inner: S, counts: Arc<Interventions>) -> Self {
        FiniteGuard { inner, counts }
    }
}

impl<S: CommandSink> CommandSink for FiniteGuard<S> {
    fn send(&mut self, mut cmd: Command) -> Result<Command, SinkError> {
        let motion_ok = match &cmd.motion {
            Motion::Twist(t) => t.is_finite(),
            Motion::Joints {
                positions,
                duration,
            } => positions.iter().all(|v| v.is_finite()) && duration.is_finite() && *duration > 0.0,
        };
        let gripper_ok = cmd.gripper.is_none_or(f64::is_finite);
        if !motion_ok || !gripper_ok {
            Interventions::bump(&self.counts.nonfinite);
            if !motion_ok {
                cmd.motion = Motion::Twist(Twist::ZERO);
            }
            if !gripper_ok {
                cmd.gripper = None;
            }
        }
        self.inner.send(cmd)
    }
}

/// Maximum linear/angular speed (norm, scaled down keeping direction) and acceleration
/// (change per period against the last *executed* twist). Slowing down to a full stop is
/// never limited: a stop must be immediate.
pub struct SpeedLimit<S> {
    inner: S,
    max_lin: f64,
    max_ang: f64,
    max_lin_acc: f64,
    max_ang_acc: f64,
    period: f64,
    last: Twist,
    counts: Arc<Interventions>,
}

impl<S: CommandSink> SpeedLimit<S> {
    pub fn new(inner: S, limits: &Limits, period: f64, counts: Arc<Interventions>) -> Self {
        SpeedLimit {
            inner,
            max_lin: limits.max_linear_speed,
            max_ang: limits.max_angular_speed,
            max_lin_acc: limits.max_linear_acceleration,
            max_ang_acc: limits.max_angular_acceleration,
            period,
            last: Twist::ZERO,
            counts,
        }
    }

    /// `v` limited to norm `max`, and to within `max_step` of `prev`.
    fn limit(v: [f64; 3], prev: [f64; 3], max: f64, max_step: f64) -> ([f64; 3], bool, bool) {
        let mut out = v;
        let n = norm(&out);
        let speed = n > max;
        if speed {
            out = out.map(|x| x * max / n);
        }
        let d = [out[0] - prev[0], out[1] - prev[1], out[2] - prev[2]];
        let dn = norm(&d);
        let acc = dn > max_step;
        if acc {
            let s = max_step / dn;
            out = [prev[0] + d[0] * s, prev[1] + d[1] * s, prev[2] + d[2] * s];
        }
        (out, speed, acc)
    }
}

impl<S: CommandSink> CommandSink for SpeedLimit<S> {
    fn send(&mut self, mut cmd: Command) -> Result<Command, SinkError> {
        if let Motion::Twist(t) = &cmd.motion {
            if !t.is_zero() {
                let (lin, s1, a1) = Self::limit(
                    t.linear,
                    self.last.linear,
                    self.max_lin,
                    self.max_lin_acc * self.period,
                );
                let (ang, s2, a2) = Self::limit(
                    t.angular,
                    self.last.angular,
                    self.max_ang,
                    self.max_ang_acc * self.period,
                );
                if s1 || s2 {
                    Interventions::bump(&self.counts.speed);
                }
                if a1 || a2 {
                    Interventions::bump(&self.counts.acceleration);
                }
                cmd.motion = Motion::Twist(Twist {
                    linear: lin,
                    angular: ang,
                });
            }
        }
        let done = self.inner.send(cmd)?;
        self.last = match &done.motion {
            Motion::Twist(t) => *t,
            Motion::Joints { .. } => Twist::ZERO,
        };
        Ok(done)
    }
}

/// Keeps the tool centre point inside a box: per axis, the velocity may not carry the tool
/// past a face within one period. Never creates motion: outside the box it only allows
/// moving back in. Without a known tool position (no `JointState` yet) it stops.
pub struct WorkspaceBox<S> {
    inner: S,
    position: Box<dyn ToolPosition>,
    lo: [f64; 3],
    hi: [f64; 3],
    period: f64,
    counts: Arc<Interventions>,
}

impl<S: CommandSink> WorkspaceBox<S> {
    pub fn new(
        inner: S,
        position: Box<dyn ToolPosition>,
        workspace: [[f64; 3]; 2],
        period: f64,
        counts: Arc<Interventions>,
    ) -> Self {
        WorkspaceBox {
            inner,
            position,
            lo: workspace[0],
            hi: workspace[1],
            period,
            counts,
        }
    }
}

impl<S: CommandSink> CommandSink for WorkspaceBox<S> {
    fn send(&mut self, mut cmd: Command) -> Result<Command, SinkError> {
        if let Motion::Twist(t) = &cmd.motion {
            if !t.is_zero() {
                match self.position.tool_position() {
                    None => {
                        Interventions::bump(&self.counts.workspace);
                        cmd.motion = Motion::Twist(Twist::ZERO);
                    }
                    Some(p) => {
                        let mut lin = t.linear;
                        let mut clamped = false;
                        for a in 0..3 {
                            let up = ((self.hi[a] - p[a]) / self.period).max(0.0);
                            let down = ((self.lo[a] - p[a]) / self.period).min(0.0);
                            let v = lin[a].clamp(down, up);
                            if v != lin[a] {
                                clamped = true;
                                lin[a] = v;
                            }
                        }
                        if clamped {
                            Interventions::bump(&self.counts.workspace);
                        }
                        cmd.motion = Motion::Twist(Twist {
                            linear: lin,
                            angular: t.angular,
                        });
                    }
                }
            }
        }
        if let Motion::Joints { positions, .. } = &mut cmd.motion {
            match self.joint_target(positions) {
                Some(None) => {}
                Some(Some(limited)) => {
                    Interventions::bump(&self.counts.workspace);
                    *positions = limited;
                }
                None => {
                    Interventions::bump(&self.counts.workspace);
                    cmd.motion = Motion::Twist(Twist::ZERO);
                }
            }
        }
        self.inner.send(cmd)
    }
}

impl<S> WorkspaceBox<S> {
    /// How far `p` lies outside the box (m, summed over the axes; 0 inside).
    fn outside(&self, p: [f64; 3]) -> f64 {
        (0..3)
            .map(|a| (self.lo[a] - p[a]).max(0.0) + (p[a] - self.hi[a]).max(0.0))
            .sum()
    }

    /// A joint target checked by forward kinematics: `Some(None)` when its tool position is
    /// inside the box (or no further outside than the measured one: moving back in),
    /// `Some(Some(q))` with the furthest point of the straight joint-space step from the
    /// measured joints that is, and `None` (hold) without kinematics or a measurement.
    fn joint_target(&self, target: &[f64]) -> Option<Option<Vec<f64>>> {
        let at = |q: &[f64]| self.position.tool_position_at(q).map(|p| self.outside(p));
        let allowed = |q: &[f64], limit: f64| at(q).is_some_and(|d| d <= limit + 1e-12);
        if allowed(target, 0.0) {
            return Some(None);
        }
        let measured = self.position.joints()?;
        if measured.len() != target.len() {
            return None;
        }
        let limit = at(&measured)?;
        if allowed(target, limit) {
            return Some(None);
        }
        let lerp = |f: f64| -> Vec<f64> {
            measured
                .iter()
                .zip(target)
                .map(|(m, t)| m + f * (t - m))
                .collect()
        };
        // The step's start is allowed by construction; halve the rest 20 times (~1e-6).
        let (mut ok, mut bad) = (0.0, 1.0);
        for _ in 0..20 {
            let mid = 0.5 * (ok + bad);
            if allowed(&lerp(mid), limit) {
                ok = mid;
            } else {
                bad = mid;
            }
        }
        Some(Some(lerp(ok)))
    }
}

/// Joint speed and acceleration of joint targets: the step from the last executed target
/// (or, after a pause, the measured joints) over the command's duration is a joint
/// velocity; it is scaled down, keeping its direction, to every joint's speed limit (the
/// lower of `max_joint_speed` and the URDF's), then moved towards the last executed
/// velocity until no joint changes speed faster than `max_joint_acceleration`. A target
/// equal to where the arm is (a hold) is never limited. Twists pass untouched.
pub struct JointSpeedLimit<S> {
    inner: S,
    arm: Arc<ArmModel>,
    joints: SharedJoints,
    max_speed: f64,
    max_acceleration: f64,
    period: f64,
    /// The last executed joint target, its joint velocity and when.
    last: Option<(Vec<f64>, Vec<f64>, std::time::Instant)>,
    counts: Arc<Interventions>,
}

impl<S: CommandSink> JointSpeedLimit<S> {
    pub fn new(
        inner: S,
        arm: Arc<ArmModel>,
        joints: SharedJoints,
        limits: &Limits,
        period: f64,
        counts: Arc<Interventions>,
    ) -> Self {
        JointSpeedLimit {
            inner,
            arm,
            joints,
            max_speed: limits.max_joint_speed,
            max_acceleration: limits.max_joint_acceleration,
            period,
            last: None,
            counts,
        }
    }

    /// Where the step starts and the velocity it continues: the last executed target when it
    /// is recent (commands accumulate on it, as the controllers do), else the measurement at rest.
    fn base(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        match &self.last {
            Some((q, v, at)) if at.elapsed().as_secs_f64() < 5.0 * self.period => {
                Some((q.clone(), v.clone()))
            }
            _ => {
                let q = self.joints.lock().ok()?.as_ref()?.positions.clone();
                let n = q.len();
                Some((q, vec![0.0; n]))
            }
        }
    }
}

impl<S: CommandSink> CommandSink for JointSpeedLimit<S> {
    fn send(&mut self, mut cmd: Command) -> Result<Command, SinkError> {
        let base = self.base();
        if let Motion::Joints {
            positions,
            duration,
        } = &mut cmd.motion
        {
            match &base {
                None => {
                    // No measurement to measure a speed against: hold.
                    Interventions::bump(&self.counts.speed);
                    cmd.motion = Motion::Twist(Twist::ZERO);
                }
                Some((q, v_last)) if q.len() == positions.len() => {
                    let dt = duration.max(1e-9);
                    let mut v: Vec<f64> =
                        positions.iter().zip(q).map(|(p, b)| (p - b) / dt).collect();
                    if v.iter().any(|x| *x != 0.0) {
                        let mut scale: f64 = 1.0;
                        for (vi, joint) in v.iter().zip(&self.arm.chain.joints) {
                            let mut vmax = self.max_speed;
                            if joint.max_velocity > 0.0 {
                                vmax = vmax.min(joint.max_velocity);
                            }
                            if vi.abs() > vmax {
                                scale = scale.min(vmax / vi.abs());
                            }
                        }
                        if scale < 1.0 {
                            Interventions::bump(&self.counts.speed);
                            v.iter_mut().for_each(|x| *x *= scale);
                        }
                        let step = self.max_acceleration * dt;
                        let mut s: f64 = 1.0;
                        for (vi, li) in v.iter().zip(v_last) {
                            let d = (vi - li).abs();
                            if d > step {
                                s = s.min(step / d);
                            }
                        }
                        if s < 1.0 {
                            Interventions::bump(&self.counts.acceleration);
                            v = v
                                .iter()
                                .zip(v_last)
                                .map(|(vi, li)| li + (vi - li) * s)
                                .collect();
                        }
                        *positions = q.iter().zip(&v).map(|(b, vi)| b + vi * dt).collect();
                    }
                }
                // A target of the wrong length: the joint limits below refuse it.
                Some(_) => {}
            }
        }
        let done = self.inner.send(cmd)?;
        self.last = match (&done.motion, base) {
            (
                Motion::Joints {
                    positions,
                    duration,
                },
                Some((q, _)),
            ) if q.len() == positions.len() => {
                let dt = duration.max(1e-9);
                let v = positions
                    .iter()
                    .zip(&q)
                    .map(|(p, b)| (p - b) / dt)
                    .collect();
                Some((positions.clone(), v, std::time::Instant::now()))
            }
            _ => None,
        };
        Ok(done)
    }
}

/// URDF joint limits (minus a margin) and joint speed limits. A twist is scaled down so
/// the joints it implies (damped least squares from the Jacobian of the measured joints)
/// stay inside the limits after one period; joint targets are clamped into the limits
/// and to `max_velocity × duration` from the measured joints.
pub struct JointLimits<S> {
    inner: S,
    arm: Arc<ArmModel>,
    joints: SharedJoints,
    margin: f64,
    period: f64,
    counts: Arc<Interventions>,
}

impl<S: CommandSink> JointLimits<S> {
    pub fn new(
        inner: S,
        arm: Arc<ArmModel>,
        joints: SharedJoints,
        margin: f64,
        period: f64,
        counts: Arc<Interventions>,
    ) -> Self {
        JointLimits {
            inner,
            arm,
            joints,
            margin,
            period,
            counts,
        }
    }

    fn measured(&self) -> Option<Vec<f64>> {
        self.joints
            .lock()
            .ok()?
            .as_ref()
            .map(|s| s.positions.clone())
    }

    /// Joint velocities a twist implies at `q` (damped least squares).
    fn joint_rates(&self, q: &[f64], t: &Twist) -> Option<Vec<f64>> {
        let (_, j) = self.arm.chain.jacobian(q);
        let jjt = &j * j.transpose() + nalgebra::DMatrix::<f64>::identity(6, 6) * 1e-4;
        let v = nalgebra::DVector::from_column_slice(&[
            t.linear[0],
            t.linear[1],
            t.linear[2],
            t.angular[0],
            t.angular[1],
            t.angular[2],
        ]);
        let y = jjt.cholesky()?.solve(&v);
        Some((j.transpose() * y).iter().copied().collect())
    }
}

impl<S: CommandSink> CommandSink for JointLimits<S> {
    fn send(&mut self, mut cmd: Command) -> Result<Command, SinkError> {
        let measured = self.measured();
        match &mut cmd.motion {
            Motion::Twist(t) if !t.is_zero() => {
                let Some(q) = measured else {
                    Interventions::bump(&self.counts.joint_limits);
                    return self.inner.send(Command {
                        motion: Motion::Twist(Twist::ZERO),
                        gripper: cmd.gripper,
                    });
                };
                let mut scale: f64 = 1.0;
                match self.joint_rates(&q, t) {
                    None => scale = 0.0,
                    Some(rates) => {
                        for ((qi, rate), joint) in q.iter().zip(&rates).zip(&self.arm.chain.joints)
                        {
                            let lo = joint.lower + self.margin;
                            let hi = joint.upper - self.margin;
                            let step = rate * self.period;
                            let next = qi + step;
                            if step > 0.0 && next > hi {
                                scale = scale.min(((hi - qi) / step).max(0.0));
                            } else if step < 0.0 && next < lo {
                                scale = scale.min(((lo - qi) / step).max(0.0));
                            }
                            let vmax = joint.max_velocity;
                            if vmax > 0.0 && rate.abs() > vmax {
                                scale = scale.min(vmax / rate.abs());
                            }
                        }
                    }
                }
                if scale < 1.0 {
                    Interventions::bump(&self.counts.joint_limits);
                    *t = t.scaled(scale.max(0.0));
                }
            }
            Motion::Joints {
                positions,
                duration,
            } => {
                let mut clamped = positions.len() != self.arm.chain.dof();
                positions.resize(self.arm.chain.dof(), 0.0);
                for (i, joint) in self.arm.chain.joints.iter().enumerate() {
                    let mut v =
                        positions[i].clamp(joint.lower + self.margin, joint.upper - self.margin);
                    if let Some(q) = &measured {
                        let step = joint.max_velocity * duration.max(0.0);
                        if joint.max_velocity > 0.0 {
                            v = v.clamp(q[i] - step, q[i] + step);
                        }
                    }
                    if v != positions[i] {
                        clamped = true;
                        positions[i] = v;
                    }
                }
                if clamped {
                    Interventions::bump(&self.counts.joint_limits);
                }
            }
            _ => {}
        }
        self.inner.send(cmd)
    }
}

/// Gripper closure kept in [0, 1] and changed by at most `max_rate × period` per command.
pub struct GripperRateLimit<S> {
    inner: S,
    max_step: f64,
    last: Option<f64>,
    counts: Arc<Interventions>,
}

impl<S: CommandSink> GripperRateLimit<S> {
    pub fn new(inner: S, max_rate: f64, period: f64, counts: Arc<Interventions>) -> Self {
        GripperRateLimit {
            inner,
            max_step: max_rate * period,
            last: None,
            counts,
        }
    }
}

impl<S: CommandSink> CommandSink for GripperRateLimit<S> {
    fn send(&mut self, mut cmd: Command) -> Result<Command, SinkError> {
        if let Some(g) = cmd.gripper {
            let mut v = g.clamp(0.0, 1.0);
            if let Some(last) = self.last {
                v = v.clamp(last - self.max_step, last + self.max_step);
            }
            if v != g {
                Interventions::bump(&self.counts.gripper);
            }
            cmd.gripper = Some(v);
        }
        let done = self.inner.send(cmd)?;
        if let Some(g) = done.gripper {
            self.last = Some(g);
        }
        Ok(done)
    }
}
