"""The per-client agreement (SPEC §3), in four parts: `fields` (the vocabulary and scalar field
types), `classification` (rules and conditions), `pricing` (tiers, weights, scope) and `agreement`
(the whole, parsed from JSON or YAML and back to the wire), and `rules`: the rule engine that
classifies an item under them (the classifier's, and metering's when it classifies again). Pure."""
