-- The example preset ships with every install. A migration runs once per database, so a user who
-- deletes it does not see it come back on the next start.
INSERT INTO presets (slug, name, prompt, negative, checkpoint, width, height, steps, cfg, sampler)
VALUES ('example_01', 'Example Preset',
        'portrait of a traveller, soft window light, detailed, masterpiece',
        'lowres, bad anatomy, watermark',
        'Illustrious/model.safetensors', 832, 1216, 28, 5.5, 'euler_ancestral')
ON CONFLICT (slug) DO NOTHING;
