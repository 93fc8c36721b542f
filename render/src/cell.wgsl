// vla-render's surface shader: Lambert diffuse + normalised Blinn-Phong specular, bevy's
// directional lights (with their shadow maps), per-camera ambient light, exposure and
// in-shader tone mapping. bevy's StandardMaterial shader costs ~4x more per pixel on a CPU
// rasteriser (lavapipe) for no visible difference on plain-coloured primitives.

#import bevy_pbr::{
    forward_io::VertexOutput,
    mesh_view_bindings as view_bindings,
}
#ifdef CELL_SHADOWS
#import bevy_pbr::{mesh_view_types, shadows}
#endif
#ifdef TONEMAP_IN_SHADER
#import bevy_core_pipeline::tonemapping::tone_mapping
#endif

const PI: f32 = 3.141592653589793;

// Linear RGBA base colour.
@group(#{MATERIAL_BIND_GROUP}) @binding(0) var<uniform> base_color: vec4<f32>;
// x: metallic, y: perceptual roughness.
@group(#{MATERIAL_BIND_GROUP}) @binding(1) var<uniform> surface: vec4<f32>;

@fragment
fn fragment(in: VertexOutput, @builtin(front_facing) is_front: bool) -> @location(0) vec4<f32> {
    var n = normalize(in.world_normal);
    if !is_front {
        n = -n;
    }
    let view = view_bindings::view;
    let v = normalize(view.world_position.xyz - in.world_position.xyz);
    let metallic = surface.x;
    let alpha = max(surface.y * surface.y, 0.002);
    let diffuse_color = base_color.rgb * (1.0 - metallic);
    let f0 = mix(vec3(0.04), base_color.rgb, metallic);
    // Blinn-Phong exponent matching GGX roughness, energy-normalised.
    let shininess = max(2.0 / (alpha * alpha) - 2.0, 1.0);
    let spec_norm = (shininess + 8.0) / (8.0 * PI);
    let n_dot_v = max(dot(n, v), 1e-4);

#ifdef CELL_SHADOWS
    let view_z = dot(vec4<f32>(
        view.view_from_world[0].z,
        view.view_from_world[1].z,
        view.view_from_world[2].z,
        view.view_from_world[3].z
    ), in.world_position);
#endif

    var direct = vec3(0.0);
    let n_lights = view_bindings::lights.n_directional_lights;
    for (var i: u32 = 0u; i < n_lights; i = i + 1u) {
        let light = &view_bindings::lights.directional_lights[i];
        let l = (*light).direction_to_light;
        let n_dot_l = dot(n, l);
        if n_dot_l <= 0.0 {
            continue;
        }
        var shadow = 1.0;
#ifdef CELL_SHADOWS
        // Compile-time switch: on a CPU rasteriser even a never-taken branch to the shadow
        // lookup doubles the shader's cost.
        if ((*light).flags & mesh_view_types::DIRECTIONAL_LIGHT_FLAGS_SHADOWS_ENABLED_BIT) != 0u {
            shadow = shadows::fetch_directional_shadow(i, in.world_position, n, view_z, in.position.xy);
        }
#endif
        let h = normalize(l + v);
        let n_dot_h = max(dot(n, h), 0.0);
        let v_dot_h = max(dot(v, h), 0.0);
        let fresnel = f0 + (1.0 - f0) * pow(1.0 - v_dot_h, 5.0);
        let specular = fresnel * spec_norm * pow(n_dot_h, shininess);
        direct += (diffuse_color / PI + specular) * (*light).color.rgb * n_dot_l * shadow;
    }
    // Ambient: uniform sky, diffuse plus a Fresnel-weighted specular share.
    let ambient_spec = f0 + (max(vec3(1.0 - surface.y), f0) - f0) * pow(1.0 - n_dot_v, 5.0);
    let ambient = (diffuse_color + ambient_spec * 0.25) * view_bindings::lights.ambient_color.rgb;

    var color = vec4((direct + ambient) * view.exposure, base_color.a);
#ifdef TONEMAP_IN_SHADER
    color = tone_mapping(color, view.color_grading);
#endif
    return color;
}
