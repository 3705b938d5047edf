"""The diffusers backend on the CPU, with a tiny randomly initialised Stable Diffusion 1.5 pipeline.

Nothing is downloaded: the pipeline is built here from small configurations, its configs are saved the way
GAZE_DIFFUSERS_CONFIG_DIR holds them on a GPU node (no weights), and its weights are written as one
original-layout (LDM) .safetensors file, so the backend goes through the real single-file loader.
Needs the optional extra: pip install -e '.[diffusers]'.
"""
import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

for _module in ("torch", "diffusers", "transformers"):
    pytest.importorskip(_module, reason=f"{_module} is not installed: the diffusers backend's tests need "
                                        "pip install -e '.[test,diffusers]'")

import torch  # noqa: E402

from services.generator.backends import BackendError, GeneratedImage, make_backend  # noqa: E402
from services.generator.backends.diffusers_backend import DiffusersBackend, infer_model_type  # noqa: E402
from services.generator.supervisor import WorkerSupervisor  # noqa: E402
from tests.helpers import start_generator  # noqa: E402
from tests.worker_stand_ins import LoadRecorder  # noqa: E402
from shared.config import Settings, load  # noqa: E402
from shared.schemas import GenerationSpec  # noqa: E402

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHECKPOINT = "SD15/tiny-sd15.safetensors"
OTHER_CHECKPOINT = "Other/tiny-copy.safetensors"
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"


# ---- a tiny SD 1.5 pipeline, built from configs ---------------------------------------------------------


def tiny_tokenizer(directory: Path):
    """A CLIP BPE tokenizer over a 60-token vocabulary written to `directory`."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    merges = ["l i", "li g", "h t</w>", "d u", "s k</w>"]
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters),
              *(m.replace(" ", "") for m in merges)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=77)


def tiny_sd15_pipeline(tmp: Path):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
                                in_channels=4, out_channels=4, cross_attention_dim=32, attention_head_dim=8,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        sample_size=64)
    tokenizer = tiny_tokenizer(tmp / "tokenizer-source")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=1, max_position_embeddings=77))
    # SD 1.5's own scheduler settings
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False).to("cpu")


# ---- diffusers' layout -> the original single-file (LDM) layout, the reverse of diffusers' converter -------

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest):
    head, _, tail = rest.partition(".")
    return f"{_RESNET.get(head, head)}.{tail}"


def unet_to_ldm(state, layers_per_block):
    per_block = layers_per_block + 1
    up_with_attention = {int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in state.items():
        p = key.split(".")
        if ".".join(p[:-1]) in _UNET_TOP:
            new = f"{_UNET_TOP['.'.join(p[:-1])]}.{p[-1]}"
        elif p[0] == "down_blocks" and p[2] == "downsamplers":
            new = f"input_blocks.{(int(p[1]) + 1) * per_block}.0.op.{p[-1]}"
        elif p[0] == "down_blocks":
            index, rest = int(p[1]) * per_block + int(p[3]) + 1, ".".join(p[4:])
            new = f"input_blocks.{index}.0.{_resnet(rest)}" if p[2] == "resnets" else f"input_blocks.{index}.1.{rest}"
        elif p[0] == "mid_block":
            rest = ".".join(p[3:])
            new = f"middle_block.{2 * int(p[2])}.{_resnet(rest)}" if p[1] == "resnets" else f"middle_block.1.{rest}"
        elif p[0] == "up_blocks" and p[2] == "upsamplers":
            block = int(p[1])
            new = (f"output_blocks.{block * per_block + layers_per_block}."
                   f"{2 if block in up_with_attention else 1}.conv.{p[-1]}")
        elif p[0] == "up_blocks":
            index, rest = int(p[1]) * per_block + int(p[3]), ".".join(p[4:])
            new = f"output_blocks.{index}.0.{_resnet(rest)}" if p[2] == "resnets" else f"output_blocks.{index}.1.{rest}"
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state, num_blocks):
    out = {}
    for key, value in state.items():
        p, new = key.split("."), key
        if p[0] in ("encoder", "decoder"):
            part = p[0]
            if p[1] == "conv_norm_out":
                new = f"{part}.norm_out.{p[-1]}"
            elif p[1] in ("down_blocks", "up_blocks"):
                down = p[1] == "down_blocks"
                block = int(p[2]) if down else num_blocks - 1 - int(p[2])
                name = "down" if down else "up"
                if p[3] in ("downsamplers", "upsamplers"):
                    new = f"{part}.{name}.{block}.{'downsample' if down else 'upsample'}.conv.{p[-1]}"
                else:
                    rest = ".".join(p[5:]).replace("conv_shortcut", "nin_shortcut")
                    new = f"{part}.{name}.{block}.block.{p[4]}.{rest}"
            elif p[1] == "mid_block" and p[2] == "resnets":
                rest = ".".join(p[4:]).replace("conv_shortcut", "nin_shortcut")
                new = f"{part}.mid.block_{int(p[3]) + 1}.{rest}"
            elif p[1] == "mid_block":
                new = f"{part}.mid.attn_1.{_VAE_ATTENTION['.'.join(p[4:-1])]}.{p[-1]}"
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(state):
    return {"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in state.items()}


def write_single_file(pipe, path: Path):
    from safetensors.torch import save_file

    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config.layers_per_block))
    state.update(vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)))
    state.update(clip_to_ldm(pipe.text_encoder.state_dict()))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))


def write_configs(pipe, directory: Path):
    """What `fetch-configs` puts on a GPU node: the pipeline's JSON and tokenizer files, no weights."""
    pipe.save_pretrained(str(directory))
    for weights in [*directory.rglob("*.safetensors"), *directory.rglob("*.bin")]:
        weights.unlink()


# ---- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(models_dir, in-memory pipeline): the checkpoint as a single file, the configs beside it."""
    tmp = tmp_path_factory.mktemp("diffusers")
    models = tmp / "models"
    pipe = tiny_sd15_pipeline(tmp)
    write_configs(pipe, models / "diffusers-configs" / SD15_REPO)
    write_single_file(pipe, models / CHECKPOINT)
    (models / "Other").mkdir()
    shutil.copy(models / CHECKPOINT, models / OTHER_CHECKPOINT)
    (models / "SD15" / "notes.txt").write_text("not a checkpoint")
    return models, pipe


@pytest.fixture(scope="module")
def backend(tiny):
    """One backend for the module, as a replica keeps one: its pipeline cache lives across the tests."""
    return DiffusersBackend(tiny[0], device="cpu")


@pytest.fixture
def jobs_config(settings):
    """The jobs service of tests/integration/conftest.py with a short maximum wait: a job for a checkpoint that
    no replica has is handed to one (which fails it) after a few seconds, not after the default minute."""
    return dataclasses.replace(settings, scheduler_max_wait_seconds=3.0).nameko_config(max_workers=1)


def make_spec(**changes) -> GenerationSpec:
    fields = dict(preset_slug="example_01", preset_name="Example", prompt="a lighthouse at dusk",
                  negative="blurry", checkpoint=CHECKPOINT, width=64, height=64, steps=3, cfg=6.0,
                  sampler="euler", seed=1234)
    fields.update(changes)
    return GenerationSpec(**fields)


def pixels(result: GeneratedImage) -> bytes:
    with Image.open(io.BytesIO(result.png)) as image:
        return image.convert("RGB").tobytes()


# ---- tests ------------------------------------------------------------------------------------------------


def test_the_checkpoint_is_recognised_as_sd15(tiny):
    assert infer_model_type(tiny[0] / CHECKPOINT) == "v1"


def test_generates_a_png_of_the_requested_size_with_metadata_and_progress(backend):
    progress = []
    result = backend.generate(make_spec(width=64, height=96, steps=4),
                              lambda value, maximum: progress.append((value, maximum)))
    assert isinstance(result, GeneratedImage)
    assert result.png.startswith(PNG_MAGIC)
    assert (result.width, result.height) == (64, 96)
    with Image.open(io.BytesIO(result.png)) as image:
        assert image.size == (64, 96)
        text = image.text
    assert text["backend"] == "diffusers"
    assert text["seed"] == "1234"
    assert text["checkpoint"] == CHECKPOINT
    assert text["prompt"] == "a lighthouse at dusk"
    assert "Sampler: euler" in text["parameters"]
    assert result.metadata["backend"] == "diffusers"
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_the_single_file_loads_exactly_the_weights_it_was_written_from(tiny, backend):
    """The real loader (single file + local configs) and the in-memory pipeline draw the same pixels."""
    models, pipe = tiny
    injected = DiffusersBackend(models, device="cpu", loader=lambda path, device, dtype: pipe)
    assert pixels(backend.generate(make_spec(seed=99))) == pixels(injected.generate(make_spec(seed=99)))


def test_same_seed_same_pixels_other_seed_other_pixels(backend):
    first, second = backend.generate(make_spec(seed=7)), backend.generate(make_spec(seed=7))
    assert pixels(first) == pixels(second)
    assert pixels(backend.generate(make_spec(seed=8))) != pixels(first)


def test_the_largest_seed_is_accepted(backend):
    assert backend.generate(make_spec(seed=2**63 - 1)).png.startswith(PNG_MAGIC)


def test_the_pipeline_is_kept_between_jobs_and_replaced_one_at_a_time(tiny):
    backend = DiffusersBackend(tiny[0], device="cpu")
    backend.generate(make_spec(seed=1))
    pipe = backend._pipe
    backend.generate(make_spec(seed=2, prompt="another prompt"))
    assert backend.loads == 1 and backend._pipe is pipe
    backend.generate(make_spec(checkpoint=OTHER_CHECKPOINT))
    assert backend.loads == 2 and backend._pipe is not pipe
    assert backend._loaded_key[0] == OTHER_CHECKPOINT
    backend.generate(make_spec())
    assert backend.loads == 3





def slow_loader(pipe, seconds):
    """A loader hook whose load takes `seconds`: the time a switch reports must cover it."""
    def load(path, device, dtype):
        time.sleep(seconds)
        return pipe
    return load


def test_each_switch_of_checkpoint_is_reported_once_with_its_load_time(tiny):
    load_seconds = 0.05
    backend = DiffusersBackend(tiny[0], device="cpu", loader=slow_loader(tiny[1], load_seconds))
    sequence = [CHECKPOINT, CHECKPOINT, OTHER_CHECKPOINT, OTHER_CHECKPOINT, CHECKPOINT]
    reported = []
    for checkpoint in sequence:
        job = LoadRecorder()
        backend.generate(make_spec(checkpoint=checkpoint, steps=2), job)
        reported.append(job.loads)
    # a repeat finds its pipeline loaded and reports nothing; each change reports the one pipeline now held
    assert [[(checkpoint, resident) for checkpoint, _, resident in loads] for loads in reported] == [
        [(CHECKPOINT, [CHECKPOINT])], [], [(OTHER_CHECKPOINT, [OTHER_CHECKPOINT])], [], [(CHECKPOINT, [CHECKPOINT])]]
    seconds = [s for loads in reported for _, s, _ in loads]
    assert all(load_seconds <= s < load_seconds + 30 for s in seconds), seconds
    assert backend.loads == len(seconds) == 3
    assert backend.resident == [CHECKPOINT]


def test_a_load_is_reported_even_when_its_job_then_fails_and_a_failed_load_is_not(tiny):
    attempts = []

    def flaky_loader(path, device, dtype):
        attempts.append(path)
        if len(attempts) == 1:
            raise RuntimeError("disk read error")
        return tiny[1]

    backend = DiffusersBackend(tiny[0], device="cpu", loader=flaky_loader)
    job = LoadRecorder()
    with pytest.raises(BackendError, match="could not load checkpoint"):
        backend.generate(make_spec(), job)
    assert job.loads == [] and backend.resident == [] and backend.loads == 0
    job = LoadRecorder()
    with pytest.raises(BackendError, match="refused the job's parameters"):
        backend.generate(make_spec(width=66), job)      # loaded, then refused by the pipeline's size check
    assert [(checkpoint, resident) for checkpoint, _, resident in job.loads] == [(CHECKPOINT, [CHECKPOINT])]
    job = LoadRecorder()
    backend.generate(make_spec(steps=2), job)           # the pipeline stayed: no second report
    assert job.loads == [] and backend.loads == 1


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_karras",
                                     "dpmpp_2m_sde", "ddim", "uni_pc", "dpm_2_ancestral"])
def test_samplers_map_to_schedulers(backend, sampler):
    progress = []
    result = backend.generate(make_spec(sampler=sampler, steps=3), lambda v, m: progress.append((v, m)))
    assert result.png.startswith(PNG_MAGIC)
    assert progress and progress[-1][0] == progress[-1][1]     # heun-like samplers count their own steps
    assert type(backend._pipe.scheduler).__name__ in {
        "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
        "DPMSolverMultistepScheduler", "DDIMScheduler", "UniPCMultistepScheduler",
        "KDPM2AncestralDiscreteScheduler"}


def test_dpmpp_2m_karras_uses_karras_sigmas(backend):
    backend.generate(make_spec(sampler="dpmpp_2m_karras", steps=2))
    assert backend._pipe.scheduler.config.use_karras_sigmas is True
    assert backend._pipe.scheduler.config.algorithm_type == "dpmsolver++"


@pytest.mark.parametrize("sampler", ["nope", "euler_ancestral_karras_x", "ddim_karras"])
def test_an_unknown_sampler_is_a_backend_error(backend, sampler):
    with pytest.raises(BackendError, match="sampler"):
        backend.generate(make_spec(sampler=sampler))


@pytest.mark.parametrize("sampler, package", [("lms", "scipy"), ("dpmpp_sde", "torchsde")])
def test_a_sampler_whose_package_is_missing_says_which(backend, sampler, package):
    try:
        __import__(package)
    except ImportError:
        with pytest.raises(BackendError, match=f"needs {package}"):
            backend.generate(make_spec(sampler=sampler, steps=2))
    else:
        assert backend.generate(make_spec(sampler=sampler, steps=2)).png.startswith(PNG_MAGIC)


def test_a_missing_checkpoint_is_a_backend_error(backend):
    with pytest.raises(BackendError, match="not found in the models directory"):
        backend.generate(make_spec(checkpoint="SDXL/missing.safetensors"))


@pytest.mark.parametrize("checkpoint", ["../outside.safetensors", "SD15/../../outside.safetensors",
                                        "/etc/outside.safetensors", "SD15/notes.txt"])
def test_paths_outside_the_models_directory_are_refused(tiny, backend, checkpoint):
    outside = tiny[0].parent / "outside.safetensors"
    shutil.copy(tiny[0] / CHECKPOINT, outside)     # it exists, and still must not be reachable
    with pytest.raises(BackendError, match="inside the models directory|not a .safetensors"):
        backend.generate(make_spec(checkpoint=checkpoint))


def test_missing_configs_are_a_readable_error_not_a_download(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    models = tmp_path / "models"
    (models / "SD15").mkdir(parents=True)
    shutil.copy(tiny[0] / CHECKPOINT, models / CHECKPOINT)
    with pytest.raises(BackendError, match=f"no diffusers pipeline configuration for {SD15_REPO}") as err:
        DiffusersBackend(models, device="cpu").generate(make_spec())
    assert f"no local diffusers config for {SD15_REPO}" in err.value.detail     # where to put it: the operator's


def test_a_file_that_is_not_a_checkpoint_is_a_backend_error(tmp_path):
    (tmp_path / "SD15").mkdir()
    (tmp_path / CHECKPOINT).write_bytes(b"not safetensors at all")
    with pytest.raises(BackendError, match="not a readable safetensors file|could not load"):
        DiffusersBackend(tmp_path, device="cpu").generate(make_spec())


def test_a_size_the_pipeline_cannot_draw_is_a_backend_error(backend):
    with pytest.raises(BackendError, match=r"refused the job's parameters \(its size") as err:
        backend.generate(make_spec(width=66, height=64))
    assert "divisible by 8" in err.value.detail


def test_checkpoints_lists_relative_paths_of_checkpoint_files(backend):
    assert backend.checkpoints() == [OTHER_CHECKPOINT, CHECKPOINT]


def test_checkpoints_follow_symlinked_folders_once(tiny, tmp_path):
    (tmp_path / "SDXL").mkdir()
    (tmp_path / "SDXL" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "SDXL" / "loop").symlink_to(tmp_path)              # a cycle must not hang the walk
    (tmp_path / "shared").symlink_to(tiny[0] / "SD15")             # models kept on another disk
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "b.safetensors").write_bytes(b"x")
    assert DiffusersBackend(tmp_path).checkpoints() == ["SDXL/a.safetensors", "shared/tiny-sd15.safetensors"]


def test_health(tiny, tmp_path):
    ok, detail = DiffusersBackend(tiny[0], device="cpu").health()
    assert ok and "diffusers" in detail and "cpu" in detail and f"pipeline configs: {SD15_REPO}" in detail
    ok, detail = DiffusersBackend(tmp_path / "nowhere", device="cpu").health()
    assert not ok and "does not exist" in detail
    if not torch.cuda.is_available():
        ok, detail = DiffusersBackend(tiny[0], device="cuda").health()
        assert not ok and "no CUDA device" in detail


def test_device_and_dtype_defaults(tiny):
    backend = DiffusersBackend(tiny[0])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert backend.device == expected
    assert backend.dtype == (torch.float16 if expected == "cuda" else torch.float32)
    assert DiffusersBackend(tiny[0], device="cpu", dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(BackendError) as err:
        DiffusersBackend(tiny[0], dtype="int8").dtype
    assert "GAZE_DIFFUSERS_DTYPE" in err.value.detail


def test_settings_choose_and_configure_the_backend(tiny):
    settings = load({"GAZE_BACKEND": "diffusers"})
    backend = make_backend(settings, {"GAZE_MODELS_DIR": str(tiny[0]), "GAZE_DIFFUSERS_DEVICE": "cpu",
                                      "GAZE_DIFFUSERS_DTYPE": "float32"})     # its own settings, from the environment
    assert isinstance(backend, DiffusersBackend)
    assert backend.models_dir == tiny[0] and backend.config_dir == tiny[0] / "diffusers-configs"
    assert backend.device == "cpu" and backend.dtype == torch.float32
    other = make_backend(settings, {"GAZE_MODELS_DIR": str(tiny[0]), "GAZE_DIFFUSERS_CONFIG_DIR": "/srv/configs"})
    assert other.config_dir == Path("/srv/configs")


def test_runs_in_the_replicas_worker_process_and_relays_progress_and_switches(tiny, monkeypatch):
    """As the generator service runs it: generate in the worker process, progress and model switches
    reported to the replica."""
    settings = Settings(backend="diffusers")
    monkeypatch.setenv("GAZE_MODELS_DIR", str(tiny[0]))     # the worker process reads its backend's settings
    monkeypatch.setenv("GAZE_DIFFUSERS_DEVICE", "cpu")
    supervisor = WorkerSupervisor(settings, "gen-diffusers")
    supervisor.start()
    published = []
    try:
        image, seconds = supervisor.run("job-1", make_spec(steps=4), lambda v, m: published.append((v, m)))
        first_load = supervisor.load_seconds_total
        # the switch the worker's backend made reaches the replica; a repeat of the checkpoint is none
        assert (supervisor.loaded_checkpoint, supervisor.resident_checkpoints, supervisor.loads) == \
            (CHECKPOINT, [CHECKPOINT], 1)
        supervisor.run("job-2", make_spec(steps=2), lambda v, m: None)
        assert supervisor.loads == 1 and supervisor.load_seconds_total == first_load
        supervisor.run("job-3", make_spec(checkpoint=OTHER_CHECKPOINT, steps=2), lambda v, m: None)
        assert (supervisor.loaded_checkpoint, supervisor.resident_checkpoints, supervisor.loads) == \
            (OTHER_CHECKPOINT, [OTHER_CHECKPOINT], 2)
    finally:
        supervisor.stop()
    assert image.png.startswith(PNG_MAGIC) and seconds > 0
    assert published and published[-1] == (4, 4)
    assert 0 < first_load < seconds


def test_a_job_runs_through_the_generator_service(container_factory, settings, jobs, tiny, monkeypatch):
    """GAZE_BACKEND=diffusers end to end: jobs service, work queue, generator replica, media store."""
    from tests.helpers import make_spec as job_spec, wait_until

    monkeypatch.setenv("GAZE_MODELS_DIR", str(tiny[0]))     # the worker process reads its backend's settings
    monkeypatch.setenv("GAZE_DIFFUSERS_DEVICE", "cpu")
    start_generator(container_factory, settings, "gen-diffusers", backend="diffusers")
    [job_id] = jobs.create(job_spec(checkpoint=CHECKPOINT, seed=4242, width=64, height=64, steps=2), 1)
    job = wait_until(lambda: (j := jobs.get(job_id))["status"] in ("done", "failed") and j, timeout=60,
                     what="job finished")
    assert job["status"] == "done", job["error"]
    path = Path(settings.media_root) / job["result"]["relative_path"]
    with Image.open(path) as image:
        assert image.size == (64, 64)
        assert image.text["backend"] == "diffusers" and image.text["seed"] == "4242"
    [failed] = jobs.create(job_spec(checkpoint="SDXL/missing.safetensors", width=64, height=64, steps=2), 1)
    job = wait_until(lambda: (j := jobs.get(failed))["status"] in ("done", "failed") and j, timeout=60,
                     what="job failed")
    assert job["status"] == "failed" and "not found in the models directory" in job["error"]
