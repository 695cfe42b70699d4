"""leod_core.pseudo"""
