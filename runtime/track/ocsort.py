"""placeholder"""
class OCSORT: pass
