"""placeholder"""
class TrackTrack: pass
