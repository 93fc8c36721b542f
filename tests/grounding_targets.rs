//! The grounding heads' heat-map targets (vla `train.grounding`) project demonstration
//! points into the front image, and into the wrist image from each frame's end-effector
//! state, with pinhole cameras that must be the simulator's: this checks that they agree
//! and that a projected object lands on its own pixels.

use vla_model::train::data::GroundingTargets;
use vla_sim::visual::CameraConfig;
use vla_sim::{Env, EnvConfig, RobotDescription, VecEnv};
use vla_tasks::{make_task, Language, Split};

fn rgb(c: [u8; 3]) -> [f32; 3] {
    c.map(f32::from)
}

/// A rendered `pick` scene of one environment, just reset.
fn pick_scene(seed: u64) -> (VecEnv, vla_core::Observation) {
    let lang = Language::builtin().expect("the built-in instruction templates");
    let config = EnvConfig {
        render_enabled: true,
        ..EnvConfig::default()
    };
    let env = Env::new(
        make_task("pick", Split::Seen, &lang, 0.0, seed).expect("a pick task"),
        config,
        RobotDescription::default_arm().expect("the built-in arm"),
    );
    let mut envs = VecEnv::new(vec![env]).expect("a rendering environment");
    let obs = envs
        .reset(&[seed])
        .expect("reset")
        .pop()
        .expect("one observation per environment");
    (envs, obs)
}

#[test]
fn projected_objects_land_on_their_own_pixels() {
    assert_eq!(
        GroundingTargets::default().front_camera,
        CameraConfig::default().front([0.0; 3]),
        "vla's default grounding camera must be the simulator's front camera"
    );
    let mut checked = 0;
    for seed in [3u64, 4] {
        let (envs, obs) = pick_scene(seed);
        let env = &envs.envs[0];
        let [front, _] = env.camera_views().unwrap();
        let cell = env.cell().unwrap();
        let (w, h) = (obs.front.width() as i64, obs.front.height() as i64);
        // Most of the image is table: its median colour.
        let table = {
            let mut chans: [Vec<f32>; 3] = Default::default();
            for c in obs.front.pixels() {
                let q = rgb(c.0);
                for k in 0..3 {
                    chans[k].push(q[k]);
                }
            }
            chans.map(|mut v| {
                v.sort_by(f32::total_cmp);
                v[v.len() / 2]
            })
        };
        for (i, object) in cell.objects.iter().enumerate() {
            let t = cell.object_pose(i).translation;
            let p = [t.x as f32, t.y as f32, t.z as f32];
            let want = object.spec.rgb.map(|v| v * 255.0);
            let at = front.project(p).unwrap();
            let default_at = GroundingTargets::default().front_camera.project(p).unwrap();
            // Camera jitter moves the view by ~1.5 cm: at most a couple of pixels.
            let shift =
                ((at[0] - default_at[0]) * w as f32).hypot((at[1] - default_at[1]) * h as f32);
            assert!(
                shift < 3.0,
                "seed {seed} object {i}: default camera off by {shift} px"
            );
            let (x, y) = ((at[0] * w as f32) as i64, (at[1] * h as f32) as i64);
            let dist = |a: [f32; 3], b: [f32; 3]| {
                (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f32>().sqrt()
            };
            // The projected pixel shows the object, not the table: its colour is nearer the
            // object's than the table's (shading darkens the object, so no exact match).
            let c = obs
                .front
                .get_pixel(x.clamp(0, w - 1) as u32, y.clamp(0, h - 1) as u32)
                .0;
            let got = rgb(c);
            assert!(
                dist(got, want) < dist(got, table),
                "seed {seed} object {i} ({}) at pixel ({x}, {y}) looks like the table: {c:?}",
                object.spec.color_name
            );
            checked += 1;
        }
    }
    assert!(checked >= 6);
}

#[test]
fn the_wrist_camera_rebuilt_from_the_state_is_the_simulators() {
    let mount = GroundingTargets::default().wrist_camera;
    let sim = CameraConfig::default();
    assert_eq!(
        (mount.eye, mount.target, mount.fov_y_deg),
        (sim.wrist_eye, sim.wrist_target, sim.wrist_fov_deg),
        "vla's default wrist mount must be the simulator's"
    );
    let mut checked = 0;
    for seed in [3u64, 4] {
        let (mut envs, mut obs) = pick_scene(seed);
        // Let the expert bring the gripper over its object, so the object fills part of the
        // wrist image.
        for _ in 0..10 {
            let action = envs.envs[0].expert_action().expect("the expert's action");
            obs = envs
                .step(&[action])
                .expect("step")
                .pop()
                .expect("one result per environment")
                .observation;
        }
        let env = &envs.envs[0];
        let [_, wrist] = env.camera_views().expect("camera views after reset");
        let rebuilt = mount.view(&obs.state).expect("a wrist view from the state");
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 2e-3);
        assert!(
            close(rebuilt.eye, wrist.eye) && close(rebuilt.target, wrist.target),
            "seed {seed}: rebuilt {rebuilt:?} vs simulator {wrist:?}"
        );
        let cell = env.cell().expect("the cell after reset");
        let (w, h) = (obs.wrist.width() as f32, obs.wrist.height() as f32);
        for (i, object) in cell.objects.iter().enumerate() {
            let t = cell.object_pose(i).translation;
            let p = [t.x as f32, t.y as f32, t.z as f32];
            let (Some(a), Some(b)) = (wrist.project(p), rebuilt.project(p)) else {
                continue;
            };
            let shift = ((a[0] - b[0]) * w).hypot((a[1] - b[1]) * h);
            assert!(shift < 1.0, "seed {seed} object {i}: {shift} px apart");
            if !b.iter().all(|v| (0.05..0.95).contains(v)) {
                continue;
            }
            // In view: the projected centre shows the object's colour, more than any other
            // object's (the table and the gripper differ from all of them).
            let c = rgb(obs.wrist.get_pixel((b[0] * w) as u32, (b[1] * h) as u32).0);
            let dist = |o: &vla_sim::cell::SimObject| {
                let want = o.spec.rgb.map(|v| v * 255.0);
                (0..3).map(|k| (c[k] - want[k]).powi(2)).sum::<f32>()
            };
            let nearest = cell
                .objects
                .iter()
                .enumerate()
                .min_by(|x, y| dist(x.1).total_cmp(&dist(y.1)))
                .map(|(k, _)| k);
            assert_eq!(
                nearest,
                Some(i),
                "seed {seed}: wrist pixel of object {i} ({}) shows {c:?}",
                object.spec.color_name
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "objects in the wrist view: {checked}");
}
