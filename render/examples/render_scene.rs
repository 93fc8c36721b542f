//! Renders the demo cell (grey table, red cube, blue cylinder, yellow sphere, grey capsule)
//! from the front camera (45° down) to a PNG.
//!
//! `cargo run -p vla-render --example render_scene -- out.png [--size 256] [--shadows] [--msaa] [--wrist]`

use vla_render::{
    demo_front_camera, demo_scene, demo_wrist_camera, Lighting, RenderConfig, Renderer,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut cfg = RenderConfig::default();
    let mut wrist = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--shadows" => cfg.shadows = true,
            "--msaa" => cfg.msaa = true,
            "--wrist" => wrist = true,
            "--size" => {
                let s: u32 = args.next().ok_or("--size needs a value")?.parse()?;
                cfg.width = s;
                cfg.height = s;
            }
            _ => path = Some(a),
        }
    }
    let path =
        path.ok_or("usage: render_scene OUT.png [--size N] [--shadows] [--msaa] [--wrist]")?;
    let mut r = Renderer::new(cfg)?;
    let id = r.add_scene(demo_scene(), [0.8, 0.85, 0.9], Lighting::default())?;
    let cam = if wrist {
        demo_wrist_camera()
    } else {
        demo_front_camera()
    };
    let frames = r.render(&[(id, cam)])?;
    let frame = frames.into_iter().next().ok_or("no frame")?;
    frame.rgb.save(&path)?;
    println!(
        "wrote {path} ({}x{}, renderer start-up {:.2} s)",
        frame.rgb.width(),
        frame.rgb.height(),
        r.warmup_time().as_secs_f64()
    );
    Ok(())
}
