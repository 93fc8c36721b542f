//! The material of every mirrored visual (see `cell.wgsl` for why not `StandardMaterial`).

use bevy::asset::uuid_handle;
use bevy::mesh::MeshVertexBufferLayoutRef;
use bevy::pbr::{MaterialPipeline, MaterialPipelineKey};
use bevy::prelude::*;
use bevy::render::render_resource::{
    AsBindGroup, RenderPipelineDescriptor, SpecializedMeshPipelineError,
};
use bevy::shader::ShaderRef;

const CELL_SHADER: Handle<Shader> = uuid_handle!("6f0f3c1e-5a7b-4c1d-9a51-2f7d3e0b9c11");

/// Plain coloured surface lit by the scene's sun and ambient light.
#[derive(Asset, TypePath, AsBindGroup, Debug, Clone)]
#[bind_group_data(CellMaterialKey)]
pub(crate) struct CellMaterial {
    /// Linear RGBA.
    #[uniform(0)]
    pub color: LinearRgba,
    /// x: metallic, y: perceptual roughness (z, w unused).
    #[uniform(1)]
    pub surface: Vec4,
    pub alpha_mode: AlphaMode,
    /// Compile the shadow-map lookup in (only when the renderer has shadows on).
    pub shadows: bool,
}

/// Pipeline specialisation key: shadows are a compile-time shader switch.
#[repr(C)]
#[derive(Eq, PartialEq, Hash, Copy, Clone)]
pub(crate) struct CellMaterialKey {
    shadows: bool,
}

impl From<&CellMaterial> for CellMaterialKey {
    fn from(m: &CellMaterial) -> Self {
        CellMaterialKey { shadows: m.shadows }
    }
}

impl Material for CellMaterial {
    fn fragment_shader() -> ShaderRef {
        ShaderRef::Handle(CELL_SHADER)
    }

    fn alpha_mode(&self) -> AlphaMode {
        self.alpha_mode
    }

    fn specialize(
        _pipeline: &MaterialPipeline,
        descriptor: &mut RenderPipelineDescriptor,
        _layout: &MeshVertexBufferLayoutRef,
        key: MaterialPipelineKey<Self>,
    ) -> Result<(), SpecializedMeshPipelineError> {
        if key.bind_group_data.shadows {
            if let Some(fragment) = descriptor.fragment.as_mut() {
                fragment.shader_defs.push("CELL_SHADOWS".into());
            }
        }
        Ok(())
    }
}

/// Registers the shader and the material plugin.
pub(crate) fn install(app: &mut App) {
    let shader = Shader::from_wgsl(include_str!("cell.wgsl"), "vla_render/cell.wgsl");
    if let Err(e) = app
        .world_mut()
        .resource_mut::<Assets<Shader>>()
        .insert(CELL_SHADER.id(), shader)
    {
        tracing::error!(%e, "cannot register the vla-render shader");
    }
    app.add_plugins(MaterialPlugin::<CellMaterial>::default());
}
