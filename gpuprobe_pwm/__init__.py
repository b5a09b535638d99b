"""The bundled PWM trainer: world model, actor, critic, Buffer, envs, checkpoints."""
