from xlgpt.cli import main

main()
