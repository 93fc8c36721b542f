//! Random placement of objects and bins on the table without overlap.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::TaskError;

/// The reachable part of the table where things are placed (m, base frame).
pub const REGION_X: [f32; 2] = [0.32, 0.62];
pub const REGION_Y: [f32; 2] = [-0.28, 0.28];
/// Extra clearance between footprints so the open fingers fit between objects.
pub const CLEARANCE: f32 = 0.035;

/// Rejection-sample positions for footprints of the given radii.
pub fn place(rng: &mut ChaCha8Rng, radii: &[f32]) -> Result<Vec<[f32; 2]>, TaskError> {
    for _attempt in 0..200 {
        let mut placed: Vec<([f32; 2], f32)> = Vec::new();
        let mut ok = true;
        for &r in radii {
            let mut found = None;
            for _ in 0..200 {
                let x = rng.random_range(REGION_X[0] + r * 0.5..=REGION_X[1] - r * 0.5);
                let y = rng.random_range(REGION_Y[0] + r * 0.5..=REGION_Y[1] - r * 0.5);
                let free = placed.iter().all(|(p, pr)| {
                    let dx = p[0] - x;
                    let dy = p[1] - y;
                    (dx * dx + dy * dy).sqrt() > pr + r + CLEARANCE
                });
                if free {
                    found = Some([x, y]);
                    break;
                }
            }
            match found {
                Some(p) => placed.push((p, r)),
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return Ok(placed.into_iter().map(|(p, _)| p).collect());
        }
    }
    Err(TaskError::Layout(format!(
        "cannot place {} footprints without overlap",
        radii.len()
    )))
}
