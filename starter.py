"""Entry point of the starter CLI: `python starter.py --help` (installed as `prisma-deploy`)."""

from cli.main import main

if __name__ == "__main__":
    main()
