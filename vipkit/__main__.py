from vipkit.cli import main

if __name__ == "__main__":  # not when a spawned process (vipkit sweep --jobs) imports it
    main()
