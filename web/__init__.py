"""The staff web pages: one server-rendered front end over the four services' HTTP APIs."""
