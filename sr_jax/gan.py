"""GAN training as Real-ESRGAN's (`RealESRGANModel.optimize_parameters`): one jitted,
data-parallel step updating the network, then the discriminator.

Per step, on a global batch (lr, hr[, hr_unsharpened]):
  1. sr = G(lr); G's loss = loss.* (L1, perceptual) against hr + gan.weight * GAN loss of D(sr)
     as "real"; G is updated as by the plain step (clipping, Adam(W), ZeRO-1 split, EMA).
  2. D's loss = GAN loss of D(real) as real + of D(sr) as fake, sr from step 1 without its
     gradient (G's output before its update, as the reference); D gets its own Adam. The real
     images are the HR before unsharp masking when data.usm is on (Real-ESRGAN's gan_gt_usm=False).
The discriminator is in training mode throughout, so each of its three calls runs one spectral-norm
power iteration (as torch's train-mode forward). Its params, power-iteration vectors and optimizer
state are `state["discriminator"]` (replicated; no EMA), checkpointed with the rest.

GAN losses (BasicSR's GANLoss; the weight applies to G only):
  vanilla: D: softplus(-real) + softplus(fake) (BCE with logits); G: softplus(-D(sr)).
  lsgan:   D: (real - 1)^2 + fake^2;                              G: (D(sr) - 1)^2.
  hinge:   D: relu(1 - real) + relu(1 + fake);                    G: -D(sr).
Each term is the mean over pixels and batch.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sr_jax import losses, optim
from sr_jax import train_step as train_step_lib
from sr_jax.models import discriminator as discriminator_lib
from sr_jax.train_state import discriminator_optimizer

GAN_LOSSES = ("vanilla", "lsgan", "hinge")
# Keys of the batch: the target of the pixel and perceptual losses, and D's real images if the
# target was unsharp-masked (data.usm).
UNSHARPENED_HR = "hr_unsharpened"


def check_config(config: ml_collections.ConfigDict) -> None:
  if config.gan.loss not in GAN_LOSSES:
    raise ValueError(f"config gan.loss={config.gan.loss!r}; expected one of {GAN_LOSSES}")


def generator_gan_loss(kind: str, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """G's GAN loss on D's logits for its output (unweighted)."""
  if kind == "vanilla":
    return jnp.mean(jax.nn.softplus(-fake_logits))
  if kind == "lsgan":
    return jnp.mean((fake_logits - 1.0) ** 2)
  if kind == "hinge":
    return -jnp.mean(fake_logits)
  raise ValueError(f"config gan.loss={kind!r}; expected one of {GAN_LOSSES}")


def discriminator_gan_loss(
  kind: str, real_logits: jnp.ndarray, fake_logits: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """D's (real, fake) GAN losses; D minimises their sum."""
  if kind == "vanilla":
    return jnp.mean(jax.nn.softplus(-real_logits)), jnp.mean(jax.nn.softplus(fake_logits))
  if kind == "lsgan":
    return jnp.mean((real_logits - 1.0) ** 2), jnp.mean(fake_logits**2)
  if kind == "hinge":
    return jnp.mean(jax.nn.relu(1.0 - real_logits)), jnp.mean(jax.nn.relu(1.0 + fake_logits))
  raise ValueError(f"config gan.loss={kind!r}; expected one of {GAN_LOSSES}")


def make_gan_train_step(
  graphdef: nnx.GraphDef,
  discriminator_graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  discriminator_tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  ema_decay: float,
  loss: losses.Loss,
  gan_loss: str,
  gan_weight: float,
  mesh: jax.sharding.Mesh | None = None,
  discriminator_init_steps: int = 0,
) -> train_step_lib.StepFn:
  """One G update then one D update on a global batch (see the module docstring); the state of
  the plain step plus `state["discriminator"]` = {params, model_state, opt_state}. For the first
  `discriminator_init_steps` steps only D is updated (BasicSR's net_d_init_iters)."""

  def train_step(state, batch):
    hr = batch["hr"]
    real = batch[UNSHARPENED_HR] if UNSHARPENED_HR in batch else hr
    d = state["discriminator"]

    def generator_loss_fn(params, model_state):
      model = nnx.merge(graphdef, params, model_state, copy=True)
      sr = model(batch["lr"])
      total, parts = loss(sr, hr, state.get("loss_state"))
      disc = nnx.merge(
        discriminator_graphdef, jax.lax.stop_gradient(d["params"]), d["model_state"], copy=True
      )
      parts["gan"] = generator_gan_loss(gan_loss, disc(sr))
      total = total + gan_weight * parts["gan"]
      new_model_state = nnx.state(model, nnx.Not(nnx.Param))
      return total, (parts, sr, new_model_state, nnx.state(disc, nnx.Not(nnx.Param)))

    (total, (parts, sr, model_state, d_model_state)), grads = jax.value_and_grad(
      generator_loss_fn, has_aux=True
    )(state["params"], state["model_state"])
    new_state = train_step_lib.apply_gradients(state, grads, model_state, tx, ema_decay, mesh)
    if discriminator_init_steps:  # G keeps its state until D has trained alone for a while
      training_g = state["step"] >= discriminator_init_steps
      for key in ("params", "model_state", "opt_state", "ema_params"):
        if key in state:
          new_state[key] = jax.tree.map(
            lambda new, old: jnp.where(training_g, new, old), new_state[key], state[key]
          )

    fake = jax.lax.stop_gradient(sr)  # G's output before its update, as the reference

    def discriminator_loss_fn(d_params):
      disc = nnx.merge(discriminator_graphdef, d_params, d_model_state, copy=True)
      real_logits = disc(real)
      fake_logits = disc(fake)
      loss_real, loss_fake = discriminator_gan_loss(gan_loss, real_logits, fake_logits)
      aux = (loss_real, loss_fake, jnp.mean(real_logits), jnp.mean(fake_logits))
      return loss_real + loss_fake, (aux, nnx.state(disc, nnx.Not(nnx.Param)))

    (_, (d_aux, d_model_state)), d_grads = jax.value_and_grad(discriminator_loss_fn, has_aux=True)(
      d["params"]
    )
    d_updates, d_opt_state = discriminator_tx.update(d_grads, d["opt_state"], d["params"])
    d_params = optax.apply_updates(d["params"], d_updates)
    new_state["discriminator"] = {
      "params": d_params,
      "model_state": d_model_state,
      "opt_state": d_opt_state,
    }
    loss_real, loss_fake, out_real, out_fake = d_aux
    grad_norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
    step_metrics = {
      "loss": total,
      **{f"loss_{k}": v for k, v in parts.items()},
      "grad_norm": grad_norm,
      "learning_rate": schedule(state["step"]),
      "d_loss_real": loss_real,
      "d_loss_fake": loss_fake,
      "d_out_real": out_real,  # D's mean logits on real and generated images
      "d_out_fake": out_fake,
    }
    return new_state, step_metrics

  return train_step


def make_step_fn(
  config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh | None = None
) -> train_step_lib.StepFn:
  """The (unjitted) GAN step of `config` (gan.weight > 0) for the network `graphdef`; the
  discriminator and the loss's backbone are built abstractly (their weights are in the state)."""
  check_config(config)
  if config.train.grad_accum_steps != 1 or config.train.compute_dtype != "float32":
    raise ValueError(
      f"the GAN step (gan.weight={config.gan.weight}) runs in float32 without gradient "
      f"accumulation; got train.grad_accum_steps={config.train.grad_accum_steps}, "
      f"train.compute_dtype={config.train.compute_dtype!r}"
    )
  hr_side = config.data.patch_size * config.data.scale
  if hr_side % 8:
    raise ValueError(
      f"the GAN discriminator needs HR patches whose side is a multiple of 8: data.patch_size="
      f"{config.data.patch_size} x data.scale={config.data.scale} = {hr_side}"
    )
  train_step_lib.check_batch_size(config, mesh.size if mesh is not None else 1)
  schedule, tx = optim.from_config(config)
  _, discriminator_tx = discriminator_optimizer(config)
  loss, _ = losses.create_loss(config.loss, load_weights=False)
  discriminator_graphdef = nnx.graphdef(
    discriminator_lib.abstract_discriminator(config.gan.discriminator)
  )
  return make_gan_train_step(
    graphdef,
    discriminator_graphdef,
    tx,
    discriminator_tx,
    schedule,
    config.train.ema_decay,
    loss,
    config.gan.loss,
    float(config.gan.weight),
    mesh,
    int(config.gan.discriminator_init_steps),
  )
