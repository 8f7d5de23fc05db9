"""XAPI errors as the simulator raises them: a code and string params."""


class ApiError(Exception):
    """Reaches the client as {"Status": "Failure", "ErrorDescription": [code, *params]}."""

    def __init__(self, code, *params):
        Exception.__init__(self, code, *params)
        self.code = code
        self.params = [str(p) for p in params]

    def description(self):
        return [self.code] + self.params
