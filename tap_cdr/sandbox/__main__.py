from tap_cdr.sandbox import main

main()
