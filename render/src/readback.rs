//! Synchronous GPU → CPU readback of the offscreen policy cameras.
//!
//! bevy's own `Readback` component delivers data one or more frames later, which would make
//! an observation lag the physics state. Instead, a render-world system runs right after the
//! frame's render graph has been submitted, copies every requested colour (and depth) target
//! into one staging buffer, and blocks until the copy is done: the bytes returned by one
//! `app.update()` are the frame rendered by that very update.
//!
//! The same system records the pipeline cache size: a frame during which new pipelines were
//! created (shader compilation on first use of a material/mesh/view combination) may have
//! skipped drawing the objects that needed them, so the caller renders it again. It also
//! lists the pipelines that can never compile (a shader error), which would leave whatever
//! they draw out of the images. A pipeline whose shader is not loaded yet is *also* in
//! `CachedPipelineState::Err` (`ShaderNotLoaded`) for a frame, but bevy re-queues it and it
//! counts as waiting: on the first frame that is the case for bevy's 19 GPU mesh-preprocessing,
//! culling and light-clustering compute pipelines, whose embedded shaders load asynchronously.

use std::sync::{Arc, Mutex};

use bevy::prelude::*;
use bevy::render::camera::ExtractedCamera;
use bevy::render::render_asset::RenderAssets;
use bevy::render::render_resource::{
    Buffer, BufferDescriptor, BufferUsages, CachedPipeline, CachedPipelineState,
    CommandEncoderDescriptor, Extent3d, MapMode, Origin3d, PipelineCache, PipelineDescriptor,
    PollType, TexelCopyBufferInfo, TexelCopyBufferLayout, TexelCopyTextureInfo, Texture,
    TextureAspect,
};
use bevy::render::renderer::{RenderDevice, RenderQueue};
use bevy::render::texture::GpuImage;
use bevy::render::view::{ViewDepthTexture, ViewTarget};
use bevy::shader::ShaderCacheError;

use crate::mirror::SlotIndex;

/// One view to read back this frame.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub slot: usize,
    pub image: AssetId<Image>,
}

/// Bytes of one view, without row padding.
pub(crate) struct Readout {
    /// RGBA8 sRGB, `width * height * 4` bytes.
    pub rgba: Vec<u8>,
    /// Raw reverse-Z depth buffer values (`near / z`), if depth was requested.
    pub depth: Option<Vec<f32>>,
}

/// State shared between the caller (main world side) and the render-world system.
#[derive(Default)]
pub(crate) struct ReadbackState {
    /// Whether depth is read too (fixed per renderer).
    pub depth: bool,
    /// What to read in the next update; the caller fills it before `app.update()`.
    pub requests: Vec<Request>,
    /// Filled by the render system, index-aligned with `requests`; `None` = not rendered.
    pub results: Vec<Option<Readout>>,
    /// Number of pipelines in the cache after this frame.
    pub pipelines: usize,
    /// Pipelines still waiting (e.g. for a shader asset) after this frame.
    pub waiting: usize,
    /// Pipelines that can never compile, as "#id label: error" (bevy logs the full error).
    pub failed: Vec<String>,
    /// Set if the staging copy failed.
    pub error: Option<String>,
}

/// Resource giving the render world access to the shared state.
#[derive(Resource, Clone)]
pub(crate) struct SharedReadback(pub Arc<Mutex<ReadbackState>>);

struct Planned {
    req: usize,
    width: u32,
    height: u32,
    row: u64,
    color: (Texture, u64),
    depth: Option<(Texture, u64)>,
}

/// A slot camera's index and depth texture.
type SlotView = (&'static SlotIndex, Option<&'static ViewDepthTexture>);
/// Cameras extracted (active) and prepared this frame.
type ActiveView = (With<ExtractedCamera>, With<ViewTarget>);

/// "#id label: error" if pipeline `id` can never compile. `ShaderNotLoaded` and
/// `ShaderImportNotYetAvailable` are not failures: bevy re-queues such a pipeline on its next
/// pass and it counts as waiting until its shaders are loaded.
fn failure((id, p): (usize, &CachedPipeline)) -> Option<String> {
    let CachedPipelineState::Err(e) = &p.state else {
        return None;
    };
    match e {
        ShaderCacheError::ShaderNotLoaded(_) | ShaderCacheError::ShaderImportNotYetAvailable => {
            None
        }
        ShaderCacheError::ProcessShaderError(_) | ShaderCacheError::CreateShaderModule(_) => {
            let label = match &p.descriptor {
                PipelineDescriptor::RenderPipelineDescriptor(d) => d.label.clone(),
                PipelineDescriptor::ComputePipelineDescriptor(d) => d.label.clone(),
            };
            let label = label
                .as_deref()
                .unwrap_or("unlabelled pipeline")
                .to_string();
            // The first line of a shader error says what failed; bevy logs the full text.
            let error = e.to_string();
            let error = error.lines().next().unwrap_or_default().trim().to_string();
            Some(format!("#{id} {label}: {error}"))
        }
    }
}

/// Render-world system (runs in `RenderSystems::Cleanup`, after the frame was submitted).
#[allow(clippy::too_many_arguments)]
pub(crate) fn readback_system(
    shared: Res<SharedReadback>,
    device: Res<RenderDevice>,
    queue: Res<RenderQueue>,
    images: Res<RenderAssets<GpuImage>>,
    views: Query<SlotView, ActiveView>,
    cache: Res<PipelineCache>,
    mut staging: Local<Option<Buffer>>,
) {
    let Ok(mut st) = shared.0.lock() else {
        return;
    };
    st.pipelines = cache.pipelines().count();
    st.waiting = cache.waiting_pipelines().count();
    st.failed = cache.pipelines().enumerate().filter_map(failure).collect();
    let n = st.requests.len();
    st.results = (0..n).map(|_| None).collect();
    if n == 0 {
        return;
    }

    // Plan: one region per colour/depth target in a single staging buffer. Regions are
    // multiples of 256 bytes (row alignment), so every offset is suitably aligned.
    let mut plan = Vec::with_capacity(n);
    let mut size = 0u64;
    for (k, req) in st.requests.iter().enumerate() {
        let Some(gpu) = images.get(req.image) else {
            continue;
        };
        let Some((_, depth_tex)) = views.iter().find(|(s, _)| s.0 == req.slot) else {
            continue;
        };
        let Extent3d { width, height, .. } = gpu.texture_descriptor.size;
        let row = RenderDevice::align_copy_bytes_per_row(width as usize * 4) as u64;
        let color = (gpu.texture.clone(), size);
        size += row * height as u64;
        let depth = if st.depth {
            let Some(d) = depth_tex else {
                continue;
            };
            let off = size;
            size += row * height as u64;
            Some((d.texture.clone(), off))
        } else {
            None
        };
        plan.push(Planned {
            req: k,
            width,
            height,
            row,
            color,
            depth,
        });
    }
    if plan.is_empty() {
        return;
    }

    let buffer = match &*staging {
        Some(b) if b.size() == size => b.clone(),
        _ => {
            let b = device.create_buffer(&BufferDescriptor {
                label: Some("vla_render readback"),
                size,
                usage: BufferUsages::MAP_READ | BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            *staging = Some(b.clone());
            b
        }
    };

    let mut encoder = device.create_command_encoder(&CommandEncoderDescriptor {
        label: Some("vla_render readback"),
    });
    let copy = |encoder: &mut bevy::render::render_resource::CommandEncoder,
                tex: &Texture,
                aspect: TextureAspect,
                off: u64,
                p: &Planned| {
        encoder.copy_texture_to_buffer(
            TexelCopyTextureInfo {
                texture: tex,
                mip_level: 0,
                origin: Origin3d::ZERO,
                aspect,
            },
            TexelCopyBufferInfo {
                buffer: &buffer,
                layout: TexelCopyBufferLayout {
                    offset: off,
                    bytes_per_row: Some(p.row as u32),
                    rows_per_image: None,
                },
            },
            Extent3d {
                width: p.width,
                height: p.height,
                depth_or_array_layers: 1,
            },
        );
    };
    for p in &plan {
        copy(&mut encoder, &p.color.0, TextureAspect::All, p.color.1, p);
        if let Some((tex, off)) = &p.depth {
            copy(&mut encoder, tex, TextureAspect::DepthOnly, *off, p);
        }
    }
    queue.submit([encoder.finish()]);

    let slice = buffer.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    if let Err(e) = device.poll(PollType::wait_indefinitely()) {
        st.error = Some(format!("device poll failed: {e}"));
        return;
    }
    match rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            st.error = Some(format!("mapping the readback buffer failed: {e}"));
            return;
        }
        Err(_) => {
            st.error = Some("readback buffer was never mapped".into());
            return;
        }
    }
    {
        let data = slice.get_mapped_range();
        for p in &plan {
            let (w, h, row) = (p.width as usize, p.height as usize, p.row as usize);
            let mut rgba = Vec::with_capacity(w * h * 4);
            let base = p.color.1 as usize;
            for y in 0..h {
                let start = base + y * row;
                rgba.extend_from_slice(&data[start..start + w * 4]);
            }
            let depth = p.depth.as_ref().map(|(_, off)| {
                let base = *off as usize;
                let mut d = Vec::with_capacity(w * h);
                for y in 0..h {
                    let start = base + y * row;
                    d.extend(
                        data[start..start + w * 4]
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                }
                d
            });
            if let Some(slot) = st.results.get_mut(p.req) {
                *slot = Some(Readout { rgba, depth });
            }
        }
    }
    buffer.unmap();
}
