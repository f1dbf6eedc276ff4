"""Testing aids for augmenter authors: the contract check and tiny random-weight Stable Diffusion components."""
