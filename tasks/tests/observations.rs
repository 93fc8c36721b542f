//! Rendered observations: each shows exactly the state it is paired with, and the same
//! seed gives the same images.

use vla_core::Action;
use vla_sim::{Env, EnvConfig, RobotDescription, VecEnv};
use vla_tasks::{make_task, Language, Split};

fn vec_env() -> VecEnv {
    let lang = Language::builtin().unwrap();
    let task = make_task("pick", Split::Seen, &lang, 0.0, 0).unwrap();
    let env = Env::new(
        task,
        EnvConfig::default(),
        RobotDescription::default_arm().unwrap(),
    );
    VecEnv::new(vec![env]).expect("renderer (run `make setup` for lavapipe)")
}

#[test]
fn observation_shows_the_state_it_is_paired_with() {
    let mut v = vec_env();
    let first = v.reset_one(0, 11).unwrap();
    assert_eq!(first.front.dimensions(), (128, 128));
    assert!(
        first
            .front
            .pixels()
            .any(|p| p.0 != first.front.get_pixel(0, 0).0),
        "first frame is not blank"
    );
    let mut previous = first;
    for _ in 0..3 {
        let action = Action::new([0.0, 0.025, -0.02], [0.0; 3], 0.0);
        let result = v.step(&[action]).unwrap().remove(0);
        let again = v.render_current(0).unwrap();
        assert_eq!(
            result.observation.front, again.front,
            "front image lags the state"
        );
        assert_eq!(
            result.observation.wrist, again.wrist,
            "wrist image lags the state"
        );
        assert_ne!(
            result.observation.wrist, previous.wrist,
            "the wrist camera moved with the arm"
        );
        previous = result.observation;
    }
}

#[test]
fn same_seed_same_images() {
    let mut a = vec_env();
    let x = a.reset_one(0, 5).unwrap();
    let y = a.reset_one(0, 5).unwrap();
    assert_eq!(x.front, y.front);
    assert_eq!(x.wrist, y.wrist);
    assert_eq!(x.state, y.state);
    let z = a.reset_one(0, 6).unwrap();
    assert_ne!(x.front, z.front);
}
