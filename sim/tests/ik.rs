//! IK reaches random reachable poses within 2 mm / 2°, and the simulated arm follows.

use nalgebra::Isometry3;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vla_core::Action;
use vla_sim::kinematics::{pose_error, IkSettings};
use vla_sim::{Cell, ControlMode, RobotDescription, SimConfig};

fn random_reachable(rng: &mut ChaCha8Rng, robot: &RobotDescription) -> (Vec<f64>, Isometry3<f64>) {
    loop {
        let q: Vec<f64> = robot
            .chain
            .joints
            .iter()
            .map(|j| rng.random_range(j.lower.max(-2.5) * 0.8..=j.upper.min(2.5) * 0.8))
            .collect();
        let pose = robot.chain.forward(&q);
        // In front of the robot, above the table.
        let t = pose.translation.vector;
        if t.z > 0.05 && t.x > 0.2 && t.x.hypot(t.y) < 0.8 {
            return (q, pose);
        }
    }
}

#[test]
fn ik_reaches_random_reachable_poses() {
    let robot = RobotDescription::default_arm().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let home = SimConfig::default().home_seed.to_vec();
    let settings = IkSettings::default();
    let mut worst = (0.0f64, 0.0f64);
    for _ in 0..50 {
        let (_, target) = random_reachable(&mut rng, &robot);
        let sol = robot.chain.inverse(&target, &home, &settings).unwrap();
        let (_, pos, rot) = pose_error(&robot.chain.forward(&sol.joints), &target);
        worst = (worst.0.max(pos), worst.1.max(rot));
        for (q, j) in sol.joints.iter().zip(&robot.chain.joints) {
            assert!(
                *q >= j.lower - 1e-9 && *q <= j.upper + 1e-9,
                "joint {} out of limits",
                j.name
            );
        }
    }
    assert!(worst.0 < 0.002, "worst position error {} m", worst.0);
    assert!(
        worst.1 < 2f64.to_radians(),
        "worst rotation error {} rad",
        worst.1
    );
}

#[test]
fn simulated_arm_settles_on_ik_targets() {
    let robot = RobotDescription::default_arm().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..5 {
        let mut cell = Cell::new(SimConfig::default(), robot.clone()).unwrap();
        let mut ctrl = cell.home(ControlMode::JointPosition).unwrap();
        let (q, target) = random_reachable(&mut rng, &robot);
        let mut a = [0.0f32; 7];
        for (i, v) in q.iter().enumerate() {
            a[i] = *v as f32;
        }
        for _ in 0..40 {
            ctrl.step(&mut cell, &Action(a));
        }
        let (_, pos, rot) = pose_error(&cell.tcp_pose(), &target);
        assert!(
            pos < 0.002 && rot < 2f64.to_radians(),
            "arm settled {pos} m / {rot} rad from target"
        );
    }
}

#[test]
fn nan_and_huge_actions_are_rejected_or_clamped_and_counted() {
    let mut cell = Cell::new(
        SimConfig::default(),
        RobotDescription::default_arm().unwrap(),
    )
    .unwrap();
    let mut ctrl = cell.home(ControlMode::EeDeltaPose).unwrap();
    let before = cell.tcp_pose();
    let r = ctrl.step(
        &mut cell,
        &Action([f32::NAN, 0.0, 0.0, 0.0, f32::INFINITY, 0.0, 0.0]),
    );
    assert!(r.rejected_nonfinite);
    let (_, pos, _) = pose_error(&cell.tcp_pose(), &before);
    assert!(pos < 0.002, "a rejected action holds still");
    let r = ctrl.step(&mut cell, &Action([10.0, -10.0, 10.0, 5.0, 5.0, 5.0, 1.0]));
    assert!(r.clamped_speed);
    let moved = (cell.tcp_pose().translation.vector - before.translation.vector).norm();
    assert!(
        moved <= SimConfig::default().max_ee_speed * 0.1 + 0.005,
        "moved {moved} m in one step"
    );
    for _ in 0..30 {
        ctrl.step(&mut cell, &Action([0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0]));
    }
    let z = cell.tcp_pose().translation.vector.z;
    assert!(
        z >= SimConfig::default().workspace[0][2] - 0.005,
        "workspace floor respected: {z}"
    );
    let state = cell.proprio_state();
    assert!(state.iter().all(|v| v.is_finite()));
}
