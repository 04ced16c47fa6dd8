"""The campaign side of rewards: signs reward tokens and publishes them for crediting."""
