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

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
"""The parameters of a weather tool: a short city name and a unit; small, so a forced call ends quickly."""
