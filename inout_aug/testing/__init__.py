"""Testing aids for augmenter authors: the contract check and tiny random-weight Stable Diffusion components."""

from inout_aug.testing.contract import ContractReport, ContractViolation, check_augmenter

__all__ = ["ContractReport", "ContractViolation", "check_augmenter"]
