//! Headless rendering tests. They share one renderer (start-up compiles every shader, which
//! takes seconds on lavapipe) and skip, with a message, only if no graphics adapter exists.

use std::sync::{Mutex, MutexGuard, OnceLock};

use vla_core::{Pose, RgbImage};
use vla_render::{
    Body, CameraView, Lighting, RenderConfig, RenderError, Renderer, SceneId, Shape, Visual,
};

fn shared() -> Option<MutexGuard<'static, Renderer>> {
    static R: OnceLock<Option<Mutex<Renderer>>> = OnceLock::new();
    let r = R.get_or_init(|| match Renderer::new(RenderConfig::default()) {
        Ok(r) => Some(Mutex::new(r)),
        Err(RenderError::NoAdapter(msg)) => {
            eprintln!("SKIPPING vla-render tests: no graphics adapter ({msg})");
            None
        }
        Err(e) => panic!("renderer failed to start: {e}"),
    });
    r.as_ref()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

const RED: [f32; 4] = [0.9, 0.05, 0.05, 1.0];

fn table() -> Body {
    Body {
        visuals: vec![Visual::new(
            Shape::Cuboid {
                half_extents: [0.4, 0.4, 0.02],
            },
            [0.5, 0.5, 0.5, 1.0],
        )],
        pose: Pose::from_translation([0.0, 0.0, -0.02]),
    }
}

fn red_cube(at: [f32; 3]) -> Body {
    Body {
        visuals: vec![Visual::new(
            Shape::Cuboid {
                half_extents: [0.04; 3],
            },
            RED,
        )],
        pose: Pose::from_translation(at),
    }
}

fn front() -> CameraView {
    CameraView::look_at([0.7, 0.0, 0.7], [0.0, 0.0, 0.0], 50.0)
}

fn is_red(p: &image::Rgb<u8>) -> bool {
    p[0] > 100 && p[1] < 60 && p[2] < 60
}

/// Centroid (x, y) and count of red pixels.
fn red_centroid(img: &RgbImage) -> (f32, f32, usize) {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0usize);
    for (x, y, p) in img.enumerate_pixels() {
        if is_red(p) {
            sx += x as f32;
            sy += y as f32;
            n += 1;
        }
    }
    (sx / n.max(1) as f32, sy / n.max(1) as f32, n)
}

fn scene(r: &mut Renderer, bodies: Vec<Body>) -> SceneId {
    r.add_scene(bodies, [0.7, 0.8, 0.9], Lighting::default())
        .expect("add_scene")
}

#[test]
fn first_image_is_complete_and_moves_without_lag() {
    let Some(mut r) = shared() else { return };
    let id = scene(&mut r, vec![table(), red_cube([0.0, 0.0, 0.04])]);
    let f0 = r.render(&[(id, front())]).expect("render").remove(0);
    let (x0, y0, n0) = red_centroid(&f0.rgb);
    assert!(n0 > 50, "first image shows no red cube ({n0} red pixels)");
    // Table is visible and the image is not a flat fill.
    let grey = f0
        .rgb
        .pixels()
        .filter(|p| p[0].abs_diff(p[1]) < 10 && p[1].abs_diff(p[2]) < 10 && p[0] > 40)
        .count();
    assert!(grey > 500, "table not visible ({grey} grey pixels)");

    // Move the cube along +y (to the image's right... or left): the next image must show it.
    r.set_poses(
        id,
        &[table().pose, Pose::from_translation([0.0, 0.2, 0.04])],
    )
    .expect("set_poses");
    let f1 = r.render(&[(id, front())]).expect("render").remove(0);
    let (x1, y1, n1) = red_centroid(&f1.rgb);
    assert!(n1 > 50);
    assert!(
        (x1 - x0).abs() > 15.0,
        "cube did not move in the very next image: {x0},{y0} -> {x1},{y1}"
    );

    // Moving back reproduces the first image byte for byte.
    r.set_poses(
        id,
        &[table().pose, Pose::from_translation([0.0, 0.0, 0.04])],
    )
    .expect("set_poses");
    let f2 = r.render(&[(id, front())]).expect("render").remove(0);
    assert!(f0.rgb == f2.rgb, "same state rendered differently");
    r.remove_scene(id).expect("remove");
}

#[test]
fn deterministic_batched_and_isolated() {
    let Some(mut r) = shared() else { return };
    let a = scene(&mut r, vec![table(), red_cube([0.05, -0.05, 0.04])]);
    let b = scene(&mut r, vec![table()]);
    let c = scene(&mut r, vec![table(), red_cube([0.05, -0.05, 0.04])]);
    let wrist = CameraView {
        eye: [0.05, -0.05, 0.35],
        target: [0.05, -0.05, 0.0],
        up: [1.0, 0.0, 0.0],
        fov_y_deg: 60.0,
    };
    let batch = r
        .render(&[(a, front()), (b, front()), (a, wrist), (c, front())])
        .expect("render");
    assert_eq!(batch.len(), 4);
    // Scene b has no cube and must not see a's or c's.
    assert_eq!(
        red_centroid(&batch[1].rgb).2,
        0,
        "scenes leak into each other"
    );
    assert!(red_centroid(&batch[0].rgb).2 > 50);
    assert!(
        red_centroid(&batch[2].rgb).2 > 500,
        "wrist view should be mostly cube"
    );
    // Identical scenes render identically, and a view does not depend on the batch.
    assert!(batch[0].rgb == batch[3].rgb);
    let alone = r.render(&[(a, wrist)]).expect("render");
    assert!(
        alone[0].rgb == batch[2].rgb,
        "view depends on batch composition"
    );
    let again = r
        .render(&[(a, front()), (b, front()), (a, wrist), (c, front())])
        .expect("render");
    for (x, y) in batch.iter().zip(&again) {
        assert!(x.rgb == y.rgb, "not deterministic");
    }

    // New episode: different objects, same id.
    r.rebuild_scene(
        a,
        vec![Body {
            visuals: vec![Visual::new(
                Shape::Sphere { radius: 0.05 },
                [0.1, 0.1, 0.9, 1.0],
            )],
            pose: Pose::from_translation([0.0, 0.0, 0.05]),
        }],
        [0.2, 0.2, 0.2],
        Lighting::default(),
    )
    .expect("rebuild");
    let f = r.render(&[(a, front())]).expect("render").remove(0);
    assert_eq!(red_centroid(&f.rgb).2, 0, "old objects survived rebuild");
    let blue = f
        .rgb
        .pixels()
        .filter(|p| p[2] > 100 && p[0] < 60 && p[1] < 60)
        .count();
    assert!(blue > 50, "rebuilt scene not drawn on its first frame");
    for id in [a, b, c] {
        r.remove_scene(id).expect("remove");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let Some(mut r) = shared() else { return };
    let id = scene(&mut r, vec![table(), red_cube([0.0, 0.0, 0.04])]);
    let nan = Pose::from_translation([f32::NAN, 0.0, 0.0]);
    assert!(matches!(
        r.set_poses(id, &[table().pose, nan]),
        Err(RenderError::InvalidPose { body: 1, .. })
    ));
    let zero_q = Pose {
        translation: [0.0; 3],
        rotation: [0.0; 4],
    };
    assert!(r.set_poses(id, &[zero_q, table().pose]).is_err());
    assert!(matches!(
        r.set_poses(id, &[table().pose]),
        Err(RenderError::PoseCount { .. })
    ));
    let unknown = scene(&mut r, vec![]);
    r.remove_scene(unknown).expect("remove");
    assert!(matches!(
        r.render(&[(unknown, front())]),
        Err(RenderError::UnknownScene(_))
    ));
    assert!(r.set_poses(unknown, &[]).is_err());
    let bad_cams = [
        CameraView::look_at([0.0; 3], [0.0; 3], 50.0),
        CameraView::look_at([0.0, 0.0, 1.0], [0.0; 3], 50.0), // up parallel to view
        CameraView::look_at([1.0, 0.0, 1.0], [0.0; 3], 0.0),
        CameraView::look_at([f32::INFINITY, 0.0, 1.0], [0.0; 3], 50.0),
    ];
    for cam in bad_cams {
        assert!(
            matches!(
                r.render(&[(id, cam)]),
                Err(RenderError::InvalidCamera { .. })
            ),
            "{cam:?} accepted"
        );
    }
    let bad_shape = Body {
        visuals: vec![Visual::new(Shape::Sphere { radius: -1.0 }, RED)],
        pose: Pose::IDENTITY,
    };
    assert!(matches!(
        r.add_scene(vec![bad_shape], [0.0; 3], Lighting::default()),
        Err(RenderError::InvalidScene(_))
    ));
    // The renderer still works, and the NaN pose left the cube where it was.
    let f = r.render(&[(id, front())]).expect("render").remove(0);
    assert!(red_centroid(&f.rgb).2 > 50);
    assert!(r.render(&[]).expect("empty").is_empty());
    r.remove_scene(id).expect("remove");
    assert!(r.remove_scene(id).is_err());
}

#[test]
fn config_validation() {
    let bad = [
        RenderConfig {
            width: 0,
            ..RenderConfig::default()
        },
        RenderConfig {
            depth: true,
            msaa: true,
            ..RenderConfig::default()
        },
    ];
    for cfg in bad {
        assert!(matches!(
            Renderer::new(cfg),
            Err(RenderError::InvalidConfig(_))
        ));
    }
    let cfg: RenderConfig = serde_json::from_str(r#"{"width": 64, "shadows": true}"#).unwrap();
    assert_eq!(
        (cfg.width, cfg.height, cfg.shadows, cfg.msaa),
        (64, 128, true, false)
    );
}

#[test]
fn depth_is_metric() {
    // Own renderer: depth needs a different configuration.
    let cfg = RenderConfig {
        width: 64,
        height: 48,
        depth: true,
        ..RenderConfig::default()
    };
    let mut r = match Renderer::new(cfg) {
        Ok(r) => r,
        Err(RenderError::NoAdapter(msg)) => {
            eprintln!("SKIPPING depth test: {msg}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // Table top at z = 0, camera 1 m above looking straight down.
    let id = r
        .add_scene(vec![table()], [0.0; 3], Lighting::default())
        .expect("add");
    let down = CameraView {
        eye: [0.0, 0.0, 1.0],
        target: [0.0, 0.0, 0.0],
        up: [1.0, 0.0, 0.0],
        fov_y_deg: 30.0,
    };
    let f = r.render(&[(id, down)]).expect("render").remove(0);
    let d = f.depth.expect("depth requested");
    assert_eq!(d.len(), 64 * 48);
    let centre = d[24 * 64 + 32];
    assert!((centre - 1.0).abs() < 0.01, "centre depth {centre}");
    // Looking at the sky: nothing hit.
    let up = CameraView {
        eye: [0.0, 0.0, 1.0],
        target: [0.0, 0.0, 2.0],
        up: [1.0, 0.0, 0.0],
        fov_y_deg: 30.0,
    };
    let f = r.render(&[(id, up)]).expect("render").remove(0);
    assert!(f.depth.expect("depth").iter().all(|v| v.is_infinite()));
}

#[test]
fn renderer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Renderer>();
}

/// Pixels at least 20 levels darker in `a` than in `b`.
/// Every pipeline the scenes use compiles, with and without shadows and MSAA: a failed one
/// would silently leave objects out of the images. Bodies are opaque and translucent so both
/// the opaque and the transparent pass (and, with shadows, the shadow pass) are exercised.
#[test]
fn no_render_pipeline_fails_to_compile() {
    let mut bodies = vec![table(), red_cube([0.0, 0.0, 0.15])];
    bodies.push(Body {
        visuals: vec![
            Visual::new(
                Shape::Capsule {
                    radius: 0.03,
                    half_height: 0.05,
                },
                [0.2, 0.3, 0.8, 0.5],
            ),
            Visual::new(Shape::Sphere { radius: 0.03 }, [0.2, 0.8, 0.3, 1.0]),
        ],
        pose: Pose::from_translation([0.1, 0.1, 0.1]),
    });
    let check = |r: &mut Renderer, what: &str| {
        let id = scene(r, bodies.clone());
        r.render(&[(id, front())]).expect("render");
        r.remove_scene(id).expect("remove");
        let failed = r.pipeline_failures();
        assert!(failed.is_empty(), "{what}: pipelines failed: {failed:#?}");
    };
    let Some(mut plain) = shared() else { return };
    check(&mut plain, "default config");
    drop(plain);
    let cfg = RenderConfig {
        shadows: true,
        msaa: true,
        ..RenderConfig::default()
    };
    let mut r = Renderer::new(cfg).expect("renderer with shadows and MSAA");
    check(&mut r, "shadows + MSAA");
}

fn darker_pixels(a: &RgbImage, b: &RgbImage) -> usize {
    a.pixels()
        .zip(b.pixels())
        .filter(|(p, q)| p[0] as i32 + 20 < q[0] as i32)
        .count()
}

#[test]
fn shadows_in_many_scenes() {
    let cfg = RenderConfig {
        shadows: true,
        ..RenderConfig::default()
    };
    let mut r = match Renderer::new(cfg) {
        Ok(r) => r,
        Err(RenderError::NoAdapter(msg)) => {
            eprintln!("SKIPPING shadow test: {msg}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // A cube floating 15 cm above the table casts a clearly separate shadow.
    let bodies = vec![table(), red_cube([0.0, 0.0, 0.15])];
    // More scenes than bevy's limit of 10 directional lights.
    let ids: Vec<_> = (0..12).map(|_| scene(&mut r, bodies.clone())).collect();
    let views: Vec<_> = ids.iter().map(|id| (*id, front())).collect();
    let frames = r.render(&views).expect("render");
    let reference = {
        let Some(mut plain) = shared() else { return };
        let id = scene(&mut plain, bodies);
        let f = plain.render(&[(id, front())]).expect("render").remove(0);
        plain.remove_scene(id).expect("remove");
        f.rgb
    };
    if let Ok(dir) = std::env::var("VLA_TEST_OUT") {
        let _ = frames[0].rgb.save(format!("{dir}/shadow0.png"));
        let _ = frames[11].rgb.save(format!("{dir}/shadow11.png"));
        let _ = reference.save(format!("{dir}/noshadow.png"));
    }
    for (i, f) in frames.iter().enumerate() {
        let n = darker_pixels(&f.rgb, &reference);
        assert!(n > 20, "scene {i}: no shadow ({n} darker pixels)");
    }
    assert!(frames[0].rgb == frames[11].rgb);
    assert_eq!(r.pipeline_failures(), Vec::<String>::new());
}
