from eldercare import create_app

app = create_app()
