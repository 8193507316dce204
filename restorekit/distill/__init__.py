"""Making training data and training students.

``degrade`` turns clean photos into the degraded low-resolution inputs a restoration model
sees in the wild (blur, resampling, noise, film grain, JPEG) and makes "aged" photos;
``train`` trains restorekit's own network on such pairs (supervised, no teacher).
"""
