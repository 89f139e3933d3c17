"""JSON schemas the grammar tests ask answers to follow, shared by the engine's and the API's tests."""

PUPIL = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "grade": {"enum": [1, 2, 3, 4, 5, 6]},
        "passed": {"type": "boolean"},
    },
    "required": ["name", "grade", "passed"],
    "additionalProperties": False,
}
"""A pupil's record: a short name, a German grade, passed or not; small, so greedy and sampled answers end quickly."""
